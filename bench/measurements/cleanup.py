"""Anonymous-user cleanup: the auth service's one DELETE of up to 100 users, with ghostsync's triggers and without.

Three databases, clones of the same seeded users (5% anonymous, almost all
older than 30 days): ``none`` (ghostsync_0001: the profile table and its
cascading foreign key, no trigger), ``control`` (a second copy of ``none``:
the A/A control), ``head`` (every ghostsync trigger: since ghostsync_0011 the
profiles of the table ghostsync created are deleted by the AFTER DELETE
statement trigger over its transition table alone, with no foreign key) and
``row_sync`` (head with ghostsync_0007's delete sync put back: the BEFORE
DELETE row trigger deleting the profile inside an exception block, one
subtransaction a row; context: what the statement trigger replaced). Every
round, each database runs ``cleanups`` cleanups through the test harness's
``AuthService.cleanup_anonymous_users()`` (GoTrue's ``models.Cleanup``
statement: ``delete from users where id in (select id ... is_anonymous is true
limit 100 for update skip locked)``, one transaction each), timed on the
client; the same 100 users go in each database.

Figures: per round, the server CPU time of head's cleanups (their backend's) over
none's (context: the issue sets no number);
and, on PostgreSQL 16 and later, the most subtransactions (with an xid) one
cleanup's transaction had open just before its COMMIT and whether its
subtransaction cache overflowed (more than 64), read with
``pg_stat_get_backend_subxact()`` from inside that transaction (target: none
overflowed, at most 64). On PostgreSQL 15 that figure is NOT AVAILABLE.
"""

from __future__ import annotations

import time
from typing import Any

from bench import harness
from bench.report import Figure, measurement_result

NAME = "cleanup"
ARMS = {"none": "none", "control": "none", "head": "head", "row_sync": "head"}
SUBXACT = ("SELECT s.subxact_count, s.subxact_overflowed FROM pg_catalog.pg_stat_get_backend_idset() AS b(id), "
           "LATERAL pg_catalog.pg_stat_get_backend_subxact(b.id) AS s "
           "WHERE pg_catalog.pg_stat_get_backend_pid(b.id) = pg_catalog.pg_backend_pid()")


class _ProbedConnection:
    """The client's connection, reading its own backend's subtransaction cache just before each COMMIT."""

    def __init__(self, conn: Any, probe: bool) -> None:
        self._conn = conn
        self._probe = probe
        self.seen: list[tuple[int, bool]] = []

    def commit(self) -> None:
        if self._probe:
            with self._conn.cursor() as cur:
                cur.execute(SUBXACT)
                row = cur.fetchone()
                if row is not None:
                    self.seen.append((int(row[0]), bool(row[1])))
        self._conn.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def run(scale: str, *, major: int = 17, say: Any = print, rounds: int = 10, cleanups: int = 4,
        **_: Any) -> dict[str, Any]:
    from ghostsync.testing.authservice import AuthService

    ws = harness.workspace(scale, major)
    rounds = max(rounds, 10)
    available = int(ws.cluster.value(ws.template("none"), "SELECT count(*) FROM auth.users WHERE is_anonymous AND "
                                     "created_at < now() - interval '30 days'"))
    cleanups = max(1, min(cleanups, available // 100 // rounds))
    rounds = max(1, min(rounds, available // 100 // cleanups))  # a small scale has few anonymous users to clean
    say(f"== {NAME}: {rounds} rounds of {cleanups} cleanup(s) of 100 anonymous users in each of {len(ARMS)} "
        f"databases ({available:,} anonymous users older than 30 days)")
    probe = major >= 16
    dbs = {arm: ws.clone(template, f"w_cleanup_{arm}") for arm, template in ARMS.items()}
    ws.cluster.execute(dbs["row_sync"], _row_sync_function(), user=harness.MIGRATING_ROLE)
    clients: dict[str, AuthService] = {}
    wall: dict[str, list[float]] = {arm: [] for arm in ARMS}
    cpu: dict[str, list[float]] = {arm: [] for arm in ARMS}
    seen: dict[str, list[tuple[int, bool]]] = {}
    try:
        probes = {}
        pids = {}
        for arm, db in dbs.items():
            auth = AuthService(ws.cluster.url(db, harness.AUTH_ROLE))
            pids[arm] = harness.backend_pid(auth.conn)
            auth.conn.commit()
            probes[arm] = _ProbedConnection(auth.conn, probe)
            auth.conn = probes[arm]  # type: ignore[assignment]
            clients[arm] = auth
        for order in harness.orders(list(ARMS), rounds):
            for arm in order:
                c0 = harness.cpu_seconds(pids[arm]) or 0.0
                began = time.perf_counter()
                deleted = sum(clients[arm].cleanup_anonymous_users() for _ in range(cleanups))
                wall[arm].append(time.perf_counter() - began)
                cpu[arm].append((harness.cpu_seconds(pids[arm]) or 0.0) - c0)
                if deleted != 100 * cleanups:
                    raise RuntimeError(f"cleanup on {arm} deleted {deleted}, not {100 * cleanups}")
        seen = {arm: p.seen for arm, p in probes.items()}
    finally:
        for auth in clients.values():
            auth.close()
    orphans = {arm: ws.cluster.value(db, "SELECT count(*) FROM public.users p WHERE NOT EXISTS "
                                         "(SELECT 1 FROM auth.users u WHERE u.id = p.id)") for arm, db in dbs.items()}
    if any(orphans.values()):
        raise RuntimeError(f"orphans after the cleanups: {orphans}")
    ws.drop(*dbs.values())
    ms = {arm: sorted(v)[len(v) // 2] / cleanups * 1000 for arm, v in wall.items()}
    say("   per cleanup of 100 users: " + ", ".join(f"{arm} {ms[arm]:.1f} ms" for arm in ARMS))
    figures = [
        Figure("cleanup.head_vs_none", NAME, "anonymous cleanup (100 users, one DELETE): head / no trigger, server CPU",
               ratios=[h / n for h, n in zip(cpu["head"], cpu["none"], strict=True) if n > 0],
               control_ratios=[c / n for c, n in zip(cpu["control"], cpu["none"], strict=True) if n > 0],
               context={"head ms": ms["head"], "none ms": ms["none"], "wall ratio": _ratio(wall["head"], wall["none"]),
                        "0007's row sync / none": _ratio(cpu["row_sync"], cpu["none"])},
               note="server CPU time of the cleaning backend over AuthService.cleanup_anonymous_users() (GoTrue's "
                    "statement, one transaction); ms: client wall time per cleanup; context: the issue sets no number",
               samples={"wall_s": wall, "backend_cpu_s": cpu}),
    ]
    if probe:
        most = max((count for count, _ in seen.get("head", [])), default=0)
        overflowed = sum(1 for _, flag in seen.get("head", []) if flag)
        figures.append(Figure(
            "cleanup.subtransactions", NAME, "subtransactions in one cleanup's transaction (head, most seen)",
            unit="subxacts", kind="max", value=float(most), target=("<=", 64.0), target_source="issue",
            context={"overflowed": overflowed, "cleanups": len(seen.get("head", [])),
                     "none (most seen)": max((c for c, _ in seen.get("none", [])), default=0),
                     "0007's row sync (most seen)": max((c for c, _ in seen.get("row_sync", [])), default=0),
                     "0007's overflowed": sum(1 for _, flag in seen.get("row_sync", []) if flag)},
            note="pg_stat_get_backend_subxact() of the cleanup's own backend, read inside its transaction just "
                 "before COMMIT; more than 64 overflows the cache", samples={"seen": seen}))
    else:
        figures.append(Figure(
            "cleanup.subtransactions", NAME, "subtransactions in one cleanup's transaction (head, most seen)",
            unit="subxacts", kind="max", value=None, target=None,
            context={"NOT AVAILABLE": f"pg_stat_get_backend_subxact() comes with PostgreSQL 16; this is {major}"},
            note="NOT AVAILABLE on this PostgreSQL"))
    return measurement_result(NAME, figures)


def _row_sync_function() -> str:
    from ghostsync import chain

    module = chain.script_directory().get_revision("ghostsync_0008").module
    # 0008's BEFORE DELETE row trigger too: ghostsync_0011 made that trigger AFTER TRUNCATE
    return str(module.PREVIOUS_HANDLE_USER_DELETED.create) + "\n" + module.ON_AUTH_USER_DELETED.create


def _ratio(a: list[float], b: list[float]) -> float | None:
    from bench.stats import interval

    found = interval([x / y for x, y in zip(a, b, strict=True) if y > 0])
    return found.value if found else None


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
