"""What the measurement modules share: the command line of a module run alone."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness
from bench.report import Figure, render_table


def main(run: Callable[..., dict[str, Any]], doc: str | None, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--scale", default="100k", help="auth users: 100k (default), 1m, 10m or a number")
    parser.add_argument("--pg", type=int, default=17, choices=(15, 17))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        result = run(args.scale, major=args.pg, rounds=args.rounds)
    finally:
        harness.close_all()
    figures = [Figure.from_dict(f) for f in result.get("figures", [])]
    if figures:
        print(render_table(figures))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0
