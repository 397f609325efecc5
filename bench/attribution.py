"""``python -m bench.attribution [--scale 100k]``: where the batched backfill's extra time goes.

Not part of ``make bench``. It repairs the same N ghosts (fresh clones of one
seeded database, as in the bench's backfill scenario) with the report's single
statement, variants of it that add one ingredient of ghostsync's batch
statement at a time, ghostsync's statement in one batch and in batches of
5000, and the report's own statement walked in keyset batches of 5000. Each
is timed in wall time and in the server backend's CPU time, every variant once
per round in rotated order; medians relative to the single statement are
printed. docs/PERFORMANCE.md quotes a run.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.__main__ import parse_scale
from bench.cluster import MIGRATING_ROLE, Cluster, backend_cpu_seconds, code_facts
from bench.scenarios import GHOSTS, REPORT_BACKFILL
from ghostsync import backfill
from ghostsync.database import engine_for
from ghostsync.urls import normalize

COLUMNS = "(id, email, email_verified, created_at, updated_at)"
SELECTED = "a.id, a.email, a.email_confirmed_at IS NOT NULL, a.created_at, a.updated_at"
NOT_EXISTS = "NOT EXISTS (SELECT 1 FROM public.users p WHERE p.id = a.id)"

SINGLE_VARIANTS = {
    "+ ON CONFLICT (id) DO NOTHING": REPORT_BACKFILL + " ON CONFLICT (id) DO NOTHING",
    "+ FOR KEY SHARE of the ghosts": (
        f"INSERT INTO public.users {COLUMNS} SELECT {SELECTED} FROM auth.users a WHERE {NOT_EXISTS} "
        "FOR KEY SHARE OF a"),
    "+ deleted_at, coalesce()": (
        "INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at) "
        "SELECT a.id, a.email, a.email_confirmed_at IS NOT NULL, a.deleted_at, coalesce(a.created_at, now()), "
        "coalesce(a.updated_at, a.created_at, now()) FROM auth.users a "
        "LEFT JOIN public.users p ON p.id = a.id WHERE p.id IS NULL"),
    "+ CTE with RETURNING, counted": f"WITH r AS ({REPORT_BACKFILL} RETURNING 1) SELECT count(*) FROM r",
}

# The report's statement, walked in keyset batches by id (no lock, no ON CONFLICT, no audit).
KEYSET_BATCH = f"""
WITH batch AS (
  SELECT * FROM auth.users
  WHERE %(after)s::uuid IS NULL OR id > %(after)s::uuid
  ORDER BY id LIMIT %(size)s
),
ins AS (
  INSERT INTO public.users {COLUMNS}
  SELECT {SELECTED} FROM batch a WHERE {NOT_EXISTS}
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1)
"""


# The report's statement over a range of auth.users' heap pages (a TID range scan, PostgreSQL 14+):
# batches in the table's physical order rather than by id.
HEAP_BATCH = f"""
INSERT INTO public.users {COLUMNS}
SELECT {SELECTED} FROM auth.users a
WHERE a.ctid >= format('(%%s,0)', %(first)s::bigint)::tid AND a.ctid < format('(%%s,0)', %(last)s::bigint)::tid
  AND {NOT_EXISTS}
"""


def _heap_order(conn: Any, size: int) -> None:
    cur = conn.connection.cursor()
    cur.execute("SELECT relpages, reltuples FROM pg_class WHERE oid = 'auth.users'::regclass")
    pages, tuples = cur.fetchone()
    cur.execute("SELECT pg_relation_size('auth.users') / current_setting('block_size')::int")
    (pages,) = cur.fetchone()
    step = max(1, int(size / max(tuples / max(pages, 1), 1)))
    for first in range(0, pages + 1, step):
        cur.execute(HEAP_BATCH, {"first": first, "last": first + step})


def _execute(conn: Any, sql: str) -> None:
    conn.exec_driver_sql(sql)


def _keyset(conn: Any, size: int) -> None:
    cur = conn.connection.cursor()
    after = None
    for _ in range(10_000_000):
        cur.execute(KEYSET_BATCH, {"after": after, "size": size})
        (after,) = cur.fetchone()
        if after is None:
            return


def variants(n: int) -> dict[str, Callable[[Any], Any]]:
    statements = backfill.current_statements()
    arms: dict[str, Callable[[Any], Any]] = {
        "report's single statement": lambda c: c.exec_driver_sql(REPORT_BACKFILL),
    }
    for name, sql in SINGLE_VARIANTS.items():
        arms[name] = functools.partial(_execute, sql=sql)
    arms["ghostsync's statement, one batch"] = lambda c: backfill.run_batched(
        c, statements, batch_size=n + 1, mode="cli")
    arms["ghostsync's statement, batches of 5000"] = lambda c: backfill.run_batched(
        c, statements, batch_size=5000, mode="cli")
    arms["report's statement, keyset batches of 5000"] = lambda c: _keyset(c, 5000)
    arms["report's statement, heap-order batches of ~5000"] = lambda c: _heap_order(c, 5000)
    return arms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attribution", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=parse_scale, default=100_000)
    parser.add_argument("--pg", type=int, default=17, choices=(15, 17))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.scale
    with Cluster(args.pg) as cluster:
        code = code_facts()
        print(f"== {n:,} ghosts, {cluster.facts()['version'].split(' on ')[0]}, {args.rounds} rounds, "
              f"ghostsync at {code['commit']}"
              + (" (+ uncommitted changes)" if code["ghostsync_or_alembic_changed_since_commit"] else ""),
              flush=True)
        cluster.create_supabase_database("b_auth")
        cluster.seed_auth_users("b_auth", n)
        cluster.vacuum("b_auth", "auth.users")
        cluster.clone("b_auth", "b_ghosts")
        cluster.upgrade("b_ghosts", "head", batch_size=str(n + 1))
        cluster.execute("b_ghosts", "TRUNCATE public.users")
        cluster.vacuum("b_ghosts", "auth.users")
        arms = variants(n)
        names = list(arms)
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                cluster.clone("b_ghosts", "attr")
                cluster.checkpoint()
                engine = engine_for(normalize(cluster.url("attr", MIGRATING_ROLE)), autocommit=True)
                try:
                    with engine.connect() as conn:
                        pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                        before = backend_cpu_seconds(pid)
                        began = time.perf_counter()
                        arms[name](conn)
                        wall[name].append(time.perf_counter() - began)
                        after = backend_cpu_seconds(pid)
                        if before is not None and after is not None:
                            cpu[name].append(after - before)
                finally:
                    engine.dispose()
                if cluster.value("attr", GHOSTS) != 0:
                    raise RuntimeError(f"{name} left ghosts")
                cluster.drop("attr")
            print(f"   round {r + 1} done", flush=True)
    base_wall = statistics.median(wall[names[0]])
    base_cpu = statistics.median(cpu[names[0]]) if cpu[names[0]] else float("nan")
    width = max(len(name) for name in names)
    print(f"{'variant':<{width}}  {'wall s':>7}  {'ratio':>6}  {'CPU s':>6}  {'ratio':>6}")
    for name in names:
        w = statistics.median(wall[name])
        c = statistics.median(cpu[name]) if cpu[name] else float("nan")
        print(f"{name:<{width}}  {w:7.3f}  {w / base_wall:5.2f}x  {c:6.2f}  {c / base_cpu:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
