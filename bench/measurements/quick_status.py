"""The every-minute health check: ``ghostsync status --quick`` on N users against the same check on 1,000.

``status.collect(conn, quick=True)`` reads the catalogs, the failure ledger, the
audit log and the statistics views, never auth.users or public.users. Measured
on a clone of head with N users and on the bench's 1,000-user head database
(``tiny``), plus a second copy of ``tiny`` (the A/A control), one warm
connection each, every round in rotated order. The server time of a call is the
CPU time its server backend used over it (the check reads nothing from disk that
is not in memory); the client's wall time around it is context.

Figure: per round, the quick check's server time on N users over its server
time on 1,000 (the bench's target: <= 1.10, a check whose cost does not grow
with the table). Run at 100k, 1m and 10m, its absolute milliseconds are
comparable across runs too.
"""

from __future__ import annotations

import time
from typing import Any

from bench import harness
from bench.report import Figure, measurement_result
from bench.stats import interval

NAME = "quick_status"


def run(scale: str, *, major: int = 17, say: Any = print, rounds: int = 10, calls: int = 5,
        **_: Any) -> dict[str, Any]:
    from ghostsync import chain, status
    from ghostsync.database import engine_for
    from ghostsync.urls import normalize

    ws = harness.workspace(scale, major)
    rounds = max(rounds, 10)
    dbs = {"big": ws.clone("head", "w_quick_big"), "tiny": ws.clone("tiny", "w_quick_tiny"),
           "control": ws.clone("tiny", "w_quick_control")}
    say(f"== {NAME}: quick check on {ws.n:,} users vs on {harness.TINY:,}, {rounds} rounds of {calls} calls each")
    script = chain.script_directory()
    engines = {arm: engine_for(normalize(ws.cluster.url(db, harness.MIGRATING_ROLE)),
                               application_name="ghostsync-status") for arm, db in dbs.items()}
    server: dict[str, list[float]] = {arm: [] for arm in dbs}
    wall: dict[str, list[float]] = {arm: [] for arm in dbs}
    sent: list[str] = []
    try:
        conns = {arm: engine.connect() for arm, engine in engines.items()}
        pids = {arm: int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) for arm, conn in conns.items()}
        for conn in conns.values():
            conn.rollback()
            for _ in range(3):  # warm
                found = status.collect(conn, quick=True, script=script)
                conn.rollback()
            if found.check != "quick" or not found.healthy:
                raise RuntimeError(f"quick check not healthy: {found.problems}")
        from sqlalchemy import event

        def capture(conn_: Any, cursor: Any, statement: str, *args: Any) -> None:
            sent.append(statement)

        event.listen(engines["big"], "before_cursor_execute", capture)
        status.collect(conns["big"], quick=True, script=script)
        conns["big"].rollback()
        event.remove(engines["big"], "before_cursor_execute", capture)
        for order in harness.orders(list(dbs), rounds):
            for arm in order:
                conn, pid = conns[arm], pids[arm]
                c0 = harness.cpu_seconds(pid) or 0.0
                began = time.perf_counter()
                for _ in range(calls):
                    status.collect(conn, quick=True, script=script)
                    conn.rollback()
                wall[arm].append((time.perf_counter() - began) / calls)
                server[arm].append(((harness.cpu_seconds(pid) or 0.0) - c0) / calls)
        for conn in conns.values():
            conn.close()
    finally:
        for engine in engines.values():
            engine.dispose()
    ws.drop(*dbs.values())
    ms = {arm: sorted(v)[len(v) // 2] * 1000 for arm, v in server.items()}
    wall_ms = {arm: sorted(v)[len(v) // 2] * 1000 for arm, v in wall.items()}
    say(f"   server time per quick check: {ws.n:,} users {ms['big']:.2f} ms, "
        f"{harness.TINY:,} users {ms['tiny']:.2f} ms "
        f"(wall {wall_ms['big']:.1f} / {wall_ms['tiny']:.1f} ms; {len(sent)} statements)")
    wall_ratio = interval([b / t for b, t in zip(wall["big"], wall["tiny"], strict=True)])
    return measurement_result(NAME, [
        Figure("quick_status.n_vs_1k", NAME, f"status --quick server time: {ws.n:,} users / 1,000 users",
               ratios=[b / t for b, t in zip(server["big"], server["tiny"], strict=True)],
               control_ratios=[c / t for c, t in zip(server["control"], server["tiny"], strict=True)],
               target=("<=", 1.10), target_source="bench",
               context={"server ms": ms["big"], "1k server ms": ms["tiny"], "wall ms": wall_ms["big"],
                        "wall ratio": wall_ratio.value if wall_ratio else None, "statements": len(sent)},
               note="server time: the CPU time of the check's server backend over the call (the check reads what is "
                    "in memory); A/A: a second 1,000-user database",
               samples={"server_s": server, "wall_s": wall}),
        Figure("quick_status.server_ms", NAME, f"status --quick server time ({ws.n:,} users)", unit="ms",
               kind="value", value=ms["big"], context={"wall ms": wall_ms["big"]},
               note="absolute, comparable across the 100k, 1m and 10m runs"),
    ], statements=sent)


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
