"""``python -m bench.summary RESULTS.json...``: the figures of several runs side by side, as a Markdown table.

docs/PERFORMANCE.md quotes its output for the runs kept in ``bench/runs/``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from bench.report import Figure


def cell(figure: dict[str, Any] | None) -> str:
    if figure is None:
        return "-"
    f = Figure.from_dict(figure)
    found, control = f.interval, f.control
    text = f.value_text()
    if found is not None:
        text += f" [{found.low:.2f}-{found.high:.2f}]"
    if control is not None:
        text += f" (A/A {control.low:.2f}-{control.high:.2f})"
    verdict = f.verdict
    if verdict is not None:
        text += f" **{verdict}**" if verdict != "met" else " met"
    return text


def table(paths: list[Path], ids: list[str] | None = None) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    heads = [f"{r.get('scale')} PG{(r.get('postgresql') or {}).get('major', '?')}" for r in runs]
    by_run = [{f["id"]: f for f in r.get("figures", [])} for r in runs]
    order: list[str] = []
    for found in by_run:
        order += [i for i in found if i not in order]
    if ids:
        order = [i for i in ids if i in order]
    # A name carries its run's size ("(100,000 users)"): left out where the columns are runs of several sizes.
    names = {i: re.sub(r" \([\d,]+ (users|ghosts)\)", "", next(found[i]["name"] for found in by_run if i in found))
             for i in order}
    lines = ["| figure | target | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(runs)]
    for i in order:
        target = next((Figure.from_dict(found[i]).target_text() for found in by_run if i in found), "-")
        lines.append(f"| {names[i]} | {target} | " + " | ".join(cell(found.get(i)) for found in by_run) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--ids", default=None, help="comma-separated figure ids, in this order")
    args = parser.parse_args(argv)
    print(table(args.results, args.ids.split(",") if args.ids else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
