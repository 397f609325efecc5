"""Backfill: ``ghostsync backfill``'s batched run against the incident report's single statement.

Every round repairs the same N ghosts (head, ``public.users`` emptied) three
times, each on a fresh clone after a checkpoint, in rotated order:

- ``single``: the report's one ``INSERT ... SELECT ... LEFT JOIN`` (as it is);
- ``control``: the same statement again on another clone: the A/A control;
- ``ghostsync``: ``ghostsync.backfill.run_batched`` with ``statements_for`` the
  head revision (what ``ghostsync backfill`` runs: the walk in physical order,
  batches of 5000, then the sweep), on an autocommit connection as ``postgres``.

Figures: per round, ghostsync's wall time over the single statement's
(target <= 1.20 at 100k, <= 1.10 at 1m; the bench holds larger scales to
1.10); the longest batch of every round (<= 1 s); the backends' CPU time ratio
and the sweep's read-only statement as context. The batched arm is stopped at
``cap`` times the single statement's time; its ratio is then a lower bound.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench import harness
from bench.report import Figure, measurement_result
from bench.stats import interval

NAME = "backfill"
BATCH_SIZE = 5000


class _Stopped(Exception):
    pass


def _target(n: int) -> tuple[tuple[str, float], str]:
    if n <= 100_000:
        return ("<=", 1.20), "issue"
    if n <= 1_000_000:
        return ("<=", 1.10), "issue"
    return ("<=", 1.10), "bench"


def run(scale: str, *, major: int = 17, say: Any = print, rounds: int = 10, cap: float = 5.0,
        **_: Any) -> dict[str, Any]:
    from ghostsync import backfill, chain
    from ghostsync.database import engine_for
    from ghostsync.urls import normalize

    ws = harness.workspace(scale, major)
    n = ws.n
    ws.template("ghosts")
    statements = backfill.statements_for(chain.declared_at(chain.head(chain.script_directory())))
    say(f"== {NAME}: {n:,} ghosts, {rounds} rounds of single statement, its A/A copy and ghostsync (batches of "
        f"{BATCH_SIZE})")
    wall: dict[str, list[float]] = {"single": [], "control": [], "ghostsync": []}
    cpu: dict[str, list[float]] = {"single": [], "control": [], "ghostsync": []}
    longest: list[float] = []
    sweeps: list[float] = []
    batches: list[int] = []
    stopped = False
    for r, order in enumerate(harness.orders(list(wall), rounds)):
        for arm in order:
            db = ws.clone("ghosts", f"w_backfill_{arm}")
            ws.cluster.checkpoint()
            engine = engine_for(normalize(ws.cluster.url(db, harness.MIGRATING_ROLE)), autocommit=True,
                                application_name="ghostsync-backfill")
            try:
                with engine.connect() as conn:
                    pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                    cpu0 = harness.cpu_seconds(pid) or 0.0
                    began = time.perf_counter()
                    if arm == "ghostsync":
                        limit = cap * min(wall["single"]) if wall["single"] else None

                        def watch(result: Any, began: float = began, limit: float | None = limit) -> None:
                            if limit is not None and time.perf_counter() - began > limit:
                                raise _Stopped()
                        try:
                            result = backfill.run_batched(conn, statements, batch_size=BATCH_SIZE, mode="cli",
                                                          on_batch=watch)
                        except _Stopped:
                            stopped = True
                            result = None
                        elapsed = time.perf_counter() - began
                        if result is not None:
                            repaired = result.repaired
                            longest.append(result.longest_batch_s)
                            batches.append(result.batches)
                            walk = sum(result.batch_seconds)
                            sweeps.append(elapsed - walk)
                    else:
                        repaired = conn.execute(text(harness.REPORT_BACKFILL)).rowcount
                        elapsed = time.perf_counter() - began
                    cpu[arm].append((harness.cpu_seconds(pid) or 0.0) - cpu0)
            finally:
                engine.dispose()
            if stopped:
                ws.drop(db)
                break
            left = ws.cluster.value(db, harness.REPORT_GHOST_COUNT)
            if repaired != n or left:
                raise RuntimeError(f"backfill arm {arm} repaired {repaired} of {n}, {left} left")
            wall[arm].append(elapsed)
            ws.drop(db)
        if stopped:
            say(f"   round {r + 1}: STOPPED: the batched run passed {cap:g}x the single statement's time")
            break
        say(f"   round {r + 1}: single {wall['single'][-1]:.2f} s, control {wall['control'][-1]:.2f} s, ghostsync "
            f"{wall['ghostsync'][-1]:.2f} s (ratio {wall['ghostsync'][-1] / wall['single'][-1]:.3f}), longest batch "
            f"{longest[-1] * 1000:.0f} ms")
    k = len(wall["ghostsync"])
    ratios = [g / s for g, s in zip(wall["ghostsync"], wall["single"][:k], strict=True)]
    control = [c / s for c, s in zip(wall["control"], wall["single"], strict=False)]
    cpu_ratios = [g / s for g, s in zip(cpu["ghostsync"][:k], cpu["single"][:k], strict=True) if s > 0]
    cpu_found = interval(cpu_ratios)
    target, source = _target(n)
    note = ("per round: ghostsync's wall time over the single statement's, fresh clones of the same N ghosts, order "
            "rotated; A/A: the single statement on a second clone")
    if stopped:
        note = f"STOPPED at {cap:g}x the single statement's time: the ratio is a lower bound; " + note
    med = sorted(wall["single"])[len(wall["single"]) // 2] if wall["single"] else float("nan")
    return measurement_result(NAME, [
        Figure("backfill.batched_vs_single", NAME, f"batched backfill / report's single statement ({n:,} ghosts)",
               ratios=ratios, control_ratios=control, target=target, target_source=source,
               context={"single s": med,
                        "ghostsync s": sorted(wall["ghostsync"])[k // 2] if k else float("nan"),
                        "server CPU ratio": cpu_found.value if cpu_found else None,
                        "batches": batches[-1] if batches else 0,
                        "outside batches s": sorted(sweeps)[len(sweeps) // 2] if sweeps else None},
               note=note,
               samples={"wall_s": wall, "backend_cpu_s": cpu, "sweep_s": sweeps}),
        Figure("backfill.longest_batch", NAME, "longest backfill batch (every round)", unit="ms", kind="max",
               value=max(longest) * 1000 if longest else None, target=("<=", 1000.0), target_source="issue",
               context={"median of rounds' longest ms": sorted(longest)[len(longest) // 2] * 1000 if longest else None},
               note="each batch is one statement in autocommit: its own transaction",
               samples={"longest_batch_ms": [x * 1000 for x in longest]}),
    ])


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
