"""``python -m bench [--scale 100k|1m|10m]``: run every measurement, print the table, write results.json."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import scenarios
from bench.cluster import Cluster, code_facts, machine_facts
from bench.report import RESULTS, Figure, render_table, write_results

SCALES = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
# Peak disk use of the run's databases, per auth user (several copies of the data live at once):
# the 1m run peaked at 4.07 GB (results.json "databases_gb_peak"); rounded up.
DISK_BYTES_PER_USER = 5_000


def parse_scale(value: str) -> int:
    value = value.strip().lower()
    if value in SCALES:
        return SCALES[value]
    match = re.fullmatch(r"(\d+)([km]?)", value)
    if not match:
        raise argparse.ArgumentTypeError(f"bad scale {value!r}: use 100k, 1m, 10m or a number of users")
    n = int(match.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2)]
    if n < 1000:
        raise argparse.ArgumentTypeError("scale must be at least 1000 users")
    return n


def scale_name(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", type=parse_scale, default=SCALES["100k"], metavar="N",
                        help="auth users: 100k (default), 1m, 10m, or any number such as 250k")
    parser.add_argument("--pg", type=int, default=17, choices=(15, 17), help="PostgreSQL major (default 17)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each side-by-side comparison (default 5)")
    parser.add_argument("--slices", type=int, default=20,
                        help="rounds of the throughput comparisons (signups, sign-ins; default 20)")
    parser.add_argument("--slice", type=float, default=0.5, dest="slice_s",
                        help="seconds each state runs per round in those (default 0.5)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent auth clients (default 4)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.rounds, args.clients, args.slices) < 1 or args.slice_s <= 0:
        print("bench: --rounds, --slices and --clients must be at least 1, --slice positive", file=sys.stderr)
        return 2
    settings = scenarios.Settings(n=args.scale, rounds=args.rounds, slices=args.slices, slice_s=args.slice_s,
                                  clients=args.clients,
                                  status_reps=max(5, args.rounds), upgrade_reps=max(1, args.rounds // 2))
    machine = machine_facts()
    code = code_facts()
    free_gb = shutil.disk_usage(tempfile.gettempdir()).free / 1024**3
    need_gb = settings.n * DISK_BYTES_PER_USER / 1024**3
    if free_gb < need_gb:
        print(f"bench: warning: {free_gb:.0f} GB free under {tempfile.gettempdir()}, the run may need about "
              f"{need_gb:.0f} GB (--scale {scale_name(settings.n)})", file=sys.stderr)
    started = time.perf_counter()
    say = scenarios.say
    say(f"== ghostsync bench: {settings.n:,} auth users (--scale {scale_name(settings.n)}), "
        f"PostgreSQL {args.pg}, {settings.clients} clients, {settings.rounds} rounds")
    say(f"   ghostsync at {code['commit'] or 'unknown commit'}"
        + (" (with uncommitted changes in ghostsync/ or alembic/)"
           if code["ghostsync_or_alembic_changed_since_commit"] else ""))
    figures: list[Figure] = []
    with Cluster(args.pg) as cluster:
        postgres = cluster.facts()
        say(f"   {postgres['version']}")
        say(f"   machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gb']} GB, {machine['os']}")
        say("== setup (not measured)")
        setup = scenarios.prepare(cluster, settings)
        plans: dict[str, str] = {}
        disk_gb = 0.0
        # Status first, on the data it is measured on; its plans right after, before signups add rows.
        states = [db for db, _ in scenarios.STATES.values()]
        for title, run, explain, done_with in (
            ("4 status", scenarios.bench_status, scenarios.status_plans, []),
            ("1 backfill", scenarios.bench_backfill, scenarios.backfill_plans, ["b_ghosts"]),
            ("2 signups", scenarios.bench_signups, None, []),
            ("3 sign-ins", scenarios.bench_signins, None, states),
            ("5 upgrade", scenarios.bench_upgrade, None, ["b_app"]),
        ):
            say(f"== {title}")
            figures.extend(run(cluster, settings))
            if explain is not None:
                plans |= explain(cluster, settings)
            size = int(cluster.value("postgres", "SELECT sum(pg_database_size(datname)) FROM pg_database"))
            disk_gb = max(disk_gb, round(size / 1024**3, 2))
            for name in done_with:  # disk space back as soon as a database has served (10m: gigabytes)
                cluster.drop(name)
    order = ["1", "2", "3", "4", "5"]
    figures.sort(key=lambda f: order.index(f.scenario.split()[0]))
    total = time.perf_counter() - started
    say("")
    say(f"== results: {settings.n:,} users, {postgres['version'].split(' on ')[0]}, "
        f"{machine['cpu']} x{machine['cpus']}, {machine['memory_gb']} GB")
    say(render_table(figures))
    say("   * target set by the bench (the issue names the figure without a number); see docs/PERFORMANCE.md")
    missed = [f for f in figures if f.met is False]
    say(f"   targets met: {sum(1 for f in figures if f.met)} of {sum(1 for f in figures if f.met is not None)}"
        + (f"; missed: {', '.join(f.id for f in missed)}" if missed else ""))
    write_results(args.output, run={
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scale": scale_name(settings.n),
        "ghostsync": code,
        "n": settings.n,
        "postgresql": postgres,
        "machine": machine,
        "settings": {
            "rounds": settings.rounds, "slices": settings.slices, "slice_s": settings.slice_s,
            "clients": settings.clients,
            "batch_size": settings.batch_size, "status_reps": settings.status_reps,
            "upgrade_reps": settings.upgrade_reps, "upgrade_signup_stream_per_s":
                settings.stream_clients * settings.stream_rate,
            "status_since_s": int(settings.since.total_seconds()),
        },
        "setup_seconds": {k: round(v, 2) for k, v in setup.items()},
        "total_seconds": round(total, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "databases_gb_peak": disk_gb,
    }, figures=figures, plans=plans)
    if code_facts() != code:
        say("   note: ghostsync's commit or files changed while the bench ran")
    say(f"   wrote {args.output} ({total:.0f} s in all)")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
