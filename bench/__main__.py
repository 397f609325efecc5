"""``python -m bench [--scale 100k|1m|10m]``: every measurement, the figures with their verdicts, results.json."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import pkgutil
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import harness, measurements
from bench.report import RESULTS, RUNS, Figure, render_table, write_results
from bench.stats import MIN_ROUNDS

# Measurements in the order they run (status first, on data no other module has touched yet);
# any other module in bench/measurements runs after these, by name.
ORDER = ["status", "quick_status", "backfill", "signups", "signup_forms", "signins", "cleanup", "upgrade",
         "cli_backfill"]
# The issue's table, in its order: the figures `make bench` prints first, with their verdicts.
ISSUE_FIGURES = ["backfill.batched_vs_single", "backfill.longest_batch", "signups.head_vs_minimal_cpu",
                 "signins.head_vs_none_cpu", "status.full_vs_anti_join", "quick_status.n_vs_1k",
                 "quick_status.server_ms", "cleanup.head_vs_none", "cleanup.subtransactions"]
# The templates each measurement clones (bench.harness): after a measurement, the runner drops those no
# measurement still to run needs. A module not named here keeps every template alive.
NEEDS = {"status": {"head"}, "quick_status": {"head", "tiny"}, "backfill": {"ghosts"},
         "signups": {"none", "minimal", "head"}, "signup_forms": {"minimal", "head"}, "signins": {"none", "head"},
         "cleanup": {"none", "head"}, "upgrade": {"app"}, "cli_backfill": set()}
# Peak disk use of the run's databases, per auth user (templates and working clones live at once).
DISK_BYTES_PER_USER = 6_000


def modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(measurements.__path__) if not m.name.startswith("_")]
    return [m for m in ORDER if m in found] + sorted(m for m in found if m not in ORDER)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", default="100k", help="auth users: 100k (default), 1m, 10m, or a number like 250k")
    parser.add_argument("--pg", type=int, default=17, choices=(15, 17), help="PostgreSQL major (default 17)")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                        help=f"rounds of each side-by-side comparison (default and least for a verdict: {MIN_ROUNDS})")
    parser.add_argument("--slices", type=int, default=20, help="rounds of the signup and sign-in comparisons (20)")
    parser.add_argument("--slice", type=float, default=1.0, dest="slice_s", help="seconds per slice (1.0)")
    parser.add_argument("--clients", type=int, default=4, help="client processes per database (4)")
    parser.add_argument("--only", default=None, help="comma-separated measurements to run (default: all: "
                        + ", ".join(modules()) + ")")
    parser.add_argument("--skip", default="", help="comma-separated measurements to leave out")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--record", action="store_true", help=f"also keep the results in {RUNS}/")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser


def call(name: str, scale: str, options: dict[str, Any]) -> dict[str, Any]:
    """``bench.measurements.NAME.run(scale, ...)`` with the options its signature takes."""
    module = importlib.import_module(f"bench.measurements.{name}")
    accepted = inspect.signature(module.run).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in options.items() if takes_all or k in accepted}
    result = module.run(scale, **kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"{name}.run returned {type(result).__name__}, not a dict")
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.slices < 1 or args.clients < 1 or args.slice_s <= 0:
        print("bench: --rounds, --slices and --clients must be at least 1, --slice positive", file=sys.stderr)
        return 2
    n = harness.scale_users(args.scale)
    scale = harness.scale_name(n)
    chosen = [m for m in (args.only.split(",") if args.only else modules()) if m not in args.skip.split(",")]
    unknown = sorted(set(chosen) - set(modules()))
    if unknown:
        print(f"bench: no measurement {', '.join(unknown)} (there are: {', '.join(modules())})", file=sys.stderr)
        return 2
    say = harness.say
    machine = harness.machine_facts()
    code = harness.code_facts()
    free_gb = shutil.disk_usage(tempfile.gettempdir()).free / 1024**3
    if free_gb < n * DISK_BYTES_PER_USER / 1024**3:
        say(f"bench: warning: {free_gb:.0f} GB free under {tempfile.gettempdir()}, the run may need about "
            f"{n * DISK_BYTES_PER_USER / 1024**3:.0f} GB")
    started = time.perf_counter()
    say(f"== ghostsync bench: {n:,} auth users (--scale {scale}), PostgreSQL {args.pg}, {args.rounds} rounds; "
        f"measurements: {', '.join(chosen)}")
    say(f"   ghostsync at {code['commit'] or 'unknown commit'}"
        + (" (with uncommitted changes in ghostsync/)" if code["ghostsync_changed_since_commit"] else ""))
    say(f"   machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gb']} GB, "
        f"load {machine['load_average']}")
    if all(m in NEEDS for m in chosen):
        harness.KEEP = set().union(*(NEEDS[m] for m in chosen))
    options = {"major": args.pg, "say": say, "rounds": args.rounds, "slices": args.slices, "slice_s": args.slice_s,
               "clients": args.clients}
    results: dict[str, Any] = {}
    figures: list[Figure] = []
    postgres: dict[str, Any] | None = None
    for name in chosen:
        began = time.perf_counter()
        try:
            result = call(name, scale, options)
        except Exception as exc:  # one measurement failing leaves the others' figures
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            say(f"   {name} FAILED: {type(exc).__name__}: {first}")
            result = {"measurement": name, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-4000:]}
        result["seconds"] = round(time.perf_counter() - began, 1)
        results[name] = result
        figures.extend(Figure.from_dict(f) for f in result.get("figures", []))
        ws = harness.current()
        if ws is not None and postgres is None:
            postgres = ws.cluster.facts()
        rest = chosen[chosen.index(name) + 1:]
        if ws is not None and all(m in NEEDS for m in rest):
            ws.note_disk()
            ws.release(set().union(*(NEEDS[m] for m in rest)) if rest else set())
    ws = harness.current()
    setup = dict(ws.setup_seconds) if ws else {}
    peak_gb = round(ws.peak_bytes / 1024**3, 2) if ws else None
    harness.close_all()
    total = time.perf_counter() - started
    order = {fid: k for k, fid in enumerate(ISSUE_FIGURES)}
    issue = sorted((f for f in figures if f.id in order), key=lambda f: order[f.id])
    others = [f for f in figures if f.id not in order]
    say("")
    say(f"== issue 14's figures: {n:,} users, {(postgres or {}).get('version', '').split(' on ')[0]}, "
        f"{machine['cpu']} x{machine['cpus']}")
    say(render_table(issue))
    if others:
        say("")
        say("== other figures (context)")
        say(render_table(others))
    for name, result in results.items():
        if "figures" not in result and "error" not in result:
            say(f"== {name} (its own figures): " + json.dumps(result.get("ratios", result), default=str)[:2000])
    say("   verdict: met when the 95% interval over the rounds lies on the target's side, missed when it lies on the "
        "other, undecided otherwise; A/A noise: the same comparison between two identical arms; * target set by "
        "the bench")
    targeted = [f for f in figures if f.verdict is not None]
    counts = {v: [f.id for f in targeted if f.verdict == v] for v in ("met", "missed", "undecided")}
    say(f"   met {len(counts['met'])}, missed {len(counts['missed'])}"
        + (f" ({', '.join(counts['missed'])})" if counts["missed"] else "")
        + f", undecided {len(counts['undecided'])}"
        + (f" ({', '.join(counts['undecided'])})" if counts["undecided"] else ""))
    failed = [name for name, r in results.items() if "error" in r]
    if failed:
        say(f"   FAILED measurements: {', '.join(failed)} (their errors are in the results file)")
    run = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scale": scale, "n": n, "ghostsync": code, "postgresql": postgres, "machine": machine,
        "settings": {"rounds": args.rounds, "slices": args.slices, "slice_s": args.slice_s, "clients": args.clients,
                     "measurements": chosen},
        "setup_seconds": setup, "databases_gb_peak": peak_gb, "total_seconds": round(total, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    write_results(args.output, run=run, figures=figures, measurements=results)
    say(f"   wrote {args.output} ({total:.0f} s in all)")
    if args.record:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%MZ")
        kept = RUNS / f"{stamp}-{scale}-pg{args.pg}.json"
        write_results(kept, run=run, figures=figures, measurements=results)
        say(f"   kept {kept}")
    return 1 if args.strict and (counts["missed"] or failed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
