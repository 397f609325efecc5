"""Status: the full ``ghostsync status`` against one bare anti-join, the incident report's own ghost count.

On a clone of head with every profile present, as ``postgres``, one warm
connection (every statement below has run once before the rounds), every
round in rotated order:

- ``anti``: the report's query as the issue quotes it
  (``SELECT count(*) FROM auth.users au LEFT JOIN public.users pu ON au.id = pu.id
  WHERE pu.id IS NULL``), sent as text, its transaction ended after it;
- ``control``: the same query again: the A/A control;
- ``full``: ``ghostsync.status.collect(conn)``: everything ``ghostsync status``
  does once connected (chain loaded once per process, as the command does once):
  its revision and declaration, the counting query, the catalog checks, jobs,
  counters; its transaction ended after it.

Both sides are timed the same way: wall time on the client around the call, on
the same connection, so each includes its round trips and nothing else (no
interpreter start, no connection). The server backend's CPU time over the same
calls is context. The figure is the per-round ratio full / anti (target <= 1.5
at 100k and 1m; the bench holds 10m to the same).

Cross-check, as a user would time it from a shell: ``ghostsync status --json``
as a process, net of ``ghostsync --version`` (the interpreter's start), over
psql's ``\\timing`` of the report's query (a context figure): that one counts
what the in-process figure leaves out, connecting and loading the chain.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.report import Figure, measurement_result
from bench.stats import interval

NAME = "status"
# Ghosts, orphans and both counts from the two primary keys alone (index-only scans joined on id): the full
# check without its stale check, which is what reading every auth.users row costs.
KEYS_ONLY = ("SELECT count(u.id), count(p.id), count(*) FILTER (WHERE p.id IS NULL), "
             "count(*) FILTER (WHERE u.id IS NULL) "
             "FROM (SELECT id FROM auth.users) AS u FULL JOIN (SELECT id FROM public.users) AS p ON p.id = u.id")
GHOSTSYNC = str(Path(sys.executable).with_name("ghostsync"))


def _explain(conn: Any, sql: str) -> str:
    from sqlalchemy import text

    rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)).all()
    conn.rollback()
    return "\n".join(r[0] for r in rows)


def run(scale: str, *, major: int = 17, say: Any = print, rounds: int = 10, cli_rounds: int = 5,
        **_: Any) -> dict[str, Any]:
    from sqlalchemy import event, text

    from ghostsync import chain, health, status
    from ghostsync.database import engine_for
    from ghostsync.urls import normalize

    ws = harness.workspace(scale, major)
    db = ws.clone("head", "w_status")
    rounds = max(rounds, 10)
    say(f"== {NAME}: {ws.n:,} users, {rounds} rounds of the report's anti-join, its A/A copy and the full status")
    script = chain.script_directory()
    engine = engine_for(normalize(ws.cluster.url(db, harness.MIGRATING_ROLE)), application_name="ghostsync-status")
    wall: dict[str, list[float]] = {"anti": [], "control": [], "full": [], "counting": [], "keys": []}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    sent: list[str] = []
    plans: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            conn.rollback()
            declared = chain.declared_at(chain.head(script), script)

            def call(kind: str) -> Any:
                if kind in ("anti", "control"):
                    found = conn.execute(text(harness.REPORT_GHOST_COUNT)).scalar_one()
                elif kind == "counting":
                    found = health.full_counts(conn, declared)
                elif kind == "keys":
                    found = conn.execute(text(KEYS_ONLY)).one()
                else:
                    found = status.collect(conn, script=script)
                conn.rollback()
                return found

            for kind in wall:  # warm: plans, caches, the chain's revision files
                call(kind)

            def capture(conn_: Any, cursor: Any, statement: str, *args: Any) -> None:
                sent.append(statement)

            event.listen(engine, "before_cursor_execute", capture)
            full = call("full")
            event.remove(engine, "before_cursor_execute", capture)
            if full.ghosts != 0 or not full.healthy:
                raise RuntimeError(f"status of the head clone is not healthy: {full.problems}")
            for order in harness.orders(list(wall), rounds):
                for kind in order:
                    c0 = harness.cpu_seconds(pid) or 0.0
                    began = time.perf_counter()
                    call(kind)
                    wall[kind].append(time.perf_counter() - began)
                    cpu[kind].append((harness.cpu_seconds(pid) or 0.0) - c0)
            plans["report_ghost_count"] = _explain(conn, harness.REPORT_GHOST_COUNT)
            counting = next((s for s in sent if "FULL JOIN" in s or "LEFT JOIN" in s), None)
            if counting:
                plans["status_counting_query"] = _explain(conn, counting)
    finally:
        engine.dispose()
    ms = {k: sorted(v)[len(v) // 2] * 1000 for k, v in wall.items()}
    say("   medians: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()) + f"; full status sends {len(sent)} "
        "statements")
    cli = _cli_cross_check(ws, db, cli_rounds, say)
    if cli:
        say(f"   from a shell: ghostsync status net of start-up {cli['status_net_ms']:.0f} ms (start-up "
            f"{cli['startup_ms']:.0f} ms), psql \\timing of the query {cli['psql_median_ms']:.1f} ms")
    ws.drop(db)
    ratios = [f / a for f, a in zip(wall["full"], wall["anti"], strict=True)]
    control = [c / a for c, a in zip(wall["control"], wall["anti"], strict=True)]
    cpu_found = interval([f / a for f, a in zip(cpu["full"], cpu["anti"], strict=True) if a > 0])
    target_source = "issue" if ws.n <= 1_000_000 else "bench"
    figures = [
        Figure("status.full_vs_anti_join", NAME, f"full status / report's anti-join ({ws.n:,} users)",
               ratios=ratios, control_ratios=control, target=("<=", 1.5), target_source=target_source,
               context={"status ms": ms["full"], "its counting query ms": ms["counting"], "anti-join ms": ms["anti"],
                        "server CPU ratio": cpu_found.value if cpu_found else None, "statements": len(sent)},
               note="both timed on the client around the call, on one warm connection, each in its own transaction; "
                    "A/A: the anti-join twice",
               samples={"wall_s": wall, "backend_cpu_s": cpu}),
        Figure("status.counting_vs_anti_join", NAME, "its counting query alone / report's anti-join",
               ratios=[c / a for c, a in zip(wall["counting"], wall["anti"], strict=True)], control_ratios=control,
               context={"counting ms": ms["counting"], "anti-join ms": ms["anti"]},
               note="ghostsync.health.full_counts: ghosts, orphans, stale profiles and both counts in one statement"),
        Figure("status.keys_vs_anti_join", NAME, "ghosts and orphans from the keys alone / report's anti-join",
               ratios=[k / a for k, a in zip(wall["keys"], wall["anti"], strict=True)], control_ratios=control,
               context={"keys ms": ms["keys"], "anti-join ms": ms["anti"]},
               note="KEYS_ONLY: the full check's counts without the stale check (index-only "
                    "scans of both primary keys, joined): what the stale check's read of every auth.users row costs"),
    ]
    if cli:
        figures.append(Figure(
            "status.cli_vs_psql", NAME, "ghostsync status process (net of start-up) / psql \\timing of the query",
            ratios=cli["ratios"], context={"status net ms": cli["status_net_ms"], "start-up ms": cli["startup_ms"],
                                           "psql \\timing ms": cli["psql_median_ms"]},
            note="as a user times it from a shell: `ghostsync status --json` wall time minus `ghostsync --version`'s, "
                 "over psql's \\timing of the report's query (warm); counts connecting and loading the chain",
            samples=cli))
    return measurement_result(NAME, figures, plans=plans, statements=sent)


def _timed(argv: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    return time.perf_counter() - began, proc.stdout + proc.stderr


def _cli_cross_check(ws: harness.Workspace, db: str, rounds: int, say: Any) -> dict[str, Any] | None:
    if rounds < 1 or not Path(GHOSTSYNC).exists():
        return None
    url = ws.cluster.url(db, harness.MIGRATING_ROLE)
    status_argv = [GHOSTSYNC, "--database-url", url, "status", "--json"]
    version_argv = [GHOSTSYNC, "--version"]
    # one psql session: the query once to warm the backend, then timed (psql \\timing: the round trip)
    psql_argv = [*ws.cluster.psql_argv(db), "-c", harness.REPORT_GHOST_COUNT, "-c", "\\timing on", "-c",
                 harness.REPORT_GHOST_COUNT]
    for argv in (status_argv, version_argv, psql_argv):
        _timed(argv)  # warm
    out: dict[str, Any] = {"status_s": [], "startup_s": [], "psql_ms": [], "ratios": []}
    for _ in range(rounds):
        status_s, _ = _timed(status_argv)
        startup_s, _ = _timed(version_argv)
        _, text_out = _timed(psql_argv)
        match = re.search(r"Time: ([\d.,]+) ms", text_out)
        if not match:
            return None
        psql_ms = float(match.group(1).replace(",", ""))
        out["status_s"].append(status_s)
        out["startup_s"].append(startup_s)
        out["psql_ms"].append(psql_ms)
        out["ratios"].append((status_s - startup_s) * 1000 / psql_ms)
    med = {k: sorted(v)[len(v) // 2] for k, v in out.items() if k != "ratios"}
    return {**out, "status_net_ms": (med["status_s"] - med["startup_s"]) * 1000,
            "startup_ms": med["startup_s"] * 1000, "psql_median_ms": med["psql_ms"]}


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
