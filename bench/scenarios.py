"""The five measurements. Each returns its figures; none changes ghostsync.

Databases (all clones of one seeded ``b_auth``, so every comparison starts
from identical data):

- ``b_app``: N auth users, the app's own ``public.users`` with a profile for
  all but every tenth user (N/10 ghosts), no ghostsync: the upgrade's input.
- ``b_none``: ghostsync at ghostsync_0001 (``public.users``, no trigger), a
  profile for every user.
- ``b_min``: ``b_none`` upgraded to ghostsync_0003: the incident report's
  minimal AFTER INSERT trigger (revision ghostsync_0002's function).
- ``b_ctrl``: a second copy of ``b_min``, measured like the others: how far two
  identical databases differ in a run (the A/A control, the noise floor).
- ``b_safe``: to ghostsync_0006: the signup sync inside an exception block
  that records failures instead of failing the signup.
- ``b_full``: to head (ghostsync_0007): plus the update and delete sync.
- ``b_ghosts``: ``b_full`` with ``public.users`` emptied: N ghosts at head.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from bench import clients
from bench.cluster import (
    ALEMBIC_INI,
    AUTH_ROLE,
    MIGRATING_ROLE,
    REPO,
    Cluster,
    backend_cpu_seconds,
    revision_module,
)
from bench.report import Figure, median
from ghostsync import backfill, health, status
from ghostsync.database import engine_for
from ghostsync.testing.supabase import APP_PROFILES_SQL
from ghostsync.urls import normalize

# The incident report's repair: one statement over the whole table.
REPORT_BACKFILL = """
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT a.id, a.email, a.email_confirmed_at IS NOT NULL, a.created_at, a.updated_at
FROM auth.users a
LEFT JOIN public.users p ON p.id = a.id
WHERE p.id IS NULL
"""

# A bare anti-join over the two primary keys: the least any ghost count can cost.
BARE_ANTI_JOIN = """
SELECT count(*) FROM auth.users a
WHERE NOT EXISTS (SELECT 1 FROM public.users p WHERE p.id = a.id)
"""

GHOSTS = BARE_ANTI_JOIN

LOCK_ACQUIRED = re.compile(r"process (\d+) acquired (\S+) on (.+?) after ([\d.]+) ms")
LOCK_WAITING = re.compile(r"process (\d+) still waiting for (\S+) on (.+?) after ([\d.]+) ms")

STATES = {
    "none": ("b_none", "no trigger (ghostsync_0001)"),
    "minimal": ("b_min", "report's minimal trigger (ghostsync_0002/0003)"),
    "control": ("b_ctrl", "a second copy of minimal: the A/A control"),
    "safe": ("b_safe", "safe signup sync (ghostsync_0006)"),
    "full": ("b_full", "ghostsync head (ghostsync_0007)"),
}


@dataclass
class Settings:
    n: int
    rounds: int = 5
    slices: int = 20
    slice_s: float = 0.5
    clients: int = 4
    batch_size: int = 5000
    status_reps: int = 5
    backfill_cap: float = 10.0
    upgrade_cap: float = 30.0
    upgrade_reps: int = 1
    stream_clients: int = 2
    stream_rate: float = 50.0
    baseline_s: float = 2.0
    since: timedelta = timedelta(hours=1)


def say(message: str) -> None:
    print(message, flush=True)


def _orders(names: list[str], rounds: int) -> list[list[str]]:
    """Round r runs the names rotated by r, the whole cycle reversed every other time round: every
    name takes every position about equally often (two names: ab, ba, ba, ab, ab, ...)."""
    orders = []
    n = len(names)
    for r in range(rounds):
        k = r % n
        order = names[k:] + names[:k]
        orders.append(order if (r // n) % 2 == 0 else list(reversed(order)))
    return orders


# -- setup -----------------------------------------------------------------------------

def prepare(cluster: Cluster, settings: Settings) -> dict[str, float]:
    """Seed ``b_auth`` and derive every database from it; returns how long each step took."""
    took: dict[str, float] = {}
    n = settings.n
    # Setup is not measured: its backfills run as a single batch so setup stays linear in N.
    one_batch = {"batch_size": str(max(n, 1))}

    def step(name: str, fn: Callable[[], None]) -> None:
        began = time.perf_counter()
        fn()
        took[name] = time.perf_counter() - began
        say(f"   {name}: {took[name]:.1f} s")

    def seed_auth() -> None:
        cluster.create_supabase_database("b_auth")
        cluster.seed_auth_users("b_auth", n)
        cluster.vacuum("b_auth", "auth.users")

    def app() -> None:
        cluster.clone("b_auth", "b_app")
        cluster.execute("b_app", APP_PROFILES_SQL, user=MIGRATING_ROLE)
        cluster.seed_profiles("b_app", ghost_every=10)
        cluster.vacuum("b_app", "auth.users", "public.users")

    def states() -> None:
        cluster.clone("b_auth", "b_none")
        cluster.upgrade("b_none", "ghostsync_0001")
        cluster.seed_profiles("b_none")
        cluster.vacuum("b_none", "auth.users", "public.users")
        cluster.clone("b_none", "b_min")
        cluster.upgrade("b_min", "ghostsync_0003", **one_batch)
        # the upgrade's backfill walked (and key-share locked) every row: freeze again
        cluster.vacuum("b_min", "auth.users", "public.users", "public.cleanup_audit_log")
        cluster.clone("b_min", "b_ctrl")
        cluster.clone("b_min", "b_safe")
        cluster.upgrade("b_safe", "ghostsync_0006", **one_batch)
        cluster.clone("b_safe", "b_full")
        cluster.upgrade("b_full", "head", **one_batch)

    def ghosts() -> None:
        cluster.clone("b_full", "b_ghosts")
        cluster.execute("b_ghosts", "TRUNCATE public.users")
        # Not ANALYZE public.users: statistics saying "empty" would plan the single statement
        # as a nested loop over a table it is filling (quadratic; docs/PERFORMANCE.md).
        # Truncated, it has no statistics, as a table with rows but no ANALYZE yet.
        cluster.vacuum("b_ghosts", "auth.users")

    step(f"seed {n:,} auth users", seed_auth)
    step("app profiles, N/10 ghosts (b_app)", app)
    step("ghostsync states none/minimal/safe/full", states)
    step(f"{n:,} ghosts at head (b_ghosts)", ghosts)
    counts = {
        "b_app ghosts": cluster.value("b_app", GHOSTS),
        "b_full ghosts": cluster.value("b_full", GHOSTS),
        "b_ghosts ghosts": cluster.value("b_ghosts", GHOSTS),
    }
    if counts != {"b_app ghosts": n // 10, "b_full ghosts": 0, "b_ghosts ghosts": n}:
        raise RuntimeError(f"seeding went wrong: {counts}")
    cluster.drop("b_auth")  # every database is derived: the seed's disk space back (10m: gigabytes)
    return took


# -- 1. backfill ---------------------------------------------------------------------------

class _Stopped(Exception):
    """The batched arm ran past its cap (a multiple of the single statement's time)."""


def bench_backfill(cluster: Cluster, settings: Settings) -> list[Figure]:
    """ghostsync's batched backfill (CLI path) vs the report's single INSERT ... SELECT ... LEFT JOIN.

    The batched arm is capped at ``backfill_cap`` times the single statement's median time (at
    least 60 s): past it the run is stopped and the ratio reported is a lower bound.
    """
    n = settings.n
    statements = backfill.current_statements()
    times: dict[str, list[float]] = {"ghostsync": [], "report": []}
    cpu: dict[str, list[float]] = {"ghostsync": [], "report": []}
    longest: list[float] = []
    batches: list[int] = []
    ratios: list[float] = []
    stopped = False
    for r, order in enumerate(_orders(["report", "ghostsync"], settings.rounds)):
        took: dict[str, float] = {}
        for arm in order:
            db = f"bf_{arm}"
            cluster.clone("b_ghosts", db)
            cluster.checkpoint()
            cap = max(60.0, settings.backfill_cap * median(times["report"])) if times["report"] else 3600.0
            engine = engine_for(normalize(cluster.url(db, MIGRATING_ROLE)), autocommit=True,
                                application_name="ghostsync-backfill")
            progress: list[backfill.BackfillResult] = []

            def watch(result: backfill.BackfillResult, began: float, cap: float = cap,
                      progress: list[backfill.BackfillResult] = progress) -> None:
                progress[:] = [result]
                if time.perf_counter() - began > cap:
                    raise _Stopped()

            try:
                with engine.connect() as conn:
                    pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                    cpu_before = backend_cpu_seconds(pid)
                    began = time.perf_counter()
                    if arm == "ghostsync":
                        try:
                            result = backfill.run_batched(
                                conn, statements, batch_size=settings.batch_size, mode="cli",
                                on_batch=functools.partial(watch, began=began))
                            repaired = result.repaired
                        except _Stopped:
                            result = progress[0]
                            stopped = True
                            repaired = result.repaired
                        elapsed = time.perf_counter() - began
                        longest.append(result.longest_batch_s)
                        batches.append(result.batches)
                    else:
                        repaired = conn.exec_driver_sql(REPORT_BACKFILL).rowcount
                        elapsed = time.perf_counter() - began
                    cpu_after = backend_cpu_seconds(pid)
                    if cpu_before is not None and cpu_after is not None:
                        cpu[arm].append(cpu_after - cpu_before)
            finally:
                engine.dispose()
            if not (arm == "ghostsync" and stopped) and (repaired != n or cluster.value(db, GHOSTS) != 0):
                raise RuntimeError(f"backfill arm {arm} repaired {repaired} of {n}")
            cluster.drop(db)
            took[arm] = elapsed
            times[arm].append(elapsed)
        ratios.append(took["ghostsync"] / took["report"])
        say(f"   round {r + 1}: single statement {took['report']:.2f} s, ghostsync {took['ghostsync']:.2f} s"
            + (f" (STOPPED after {batches[-1]} batches)" if stopped else "")
            + f", ratio {ratios[-1]:.3f}, longest batch {longest[-1] * 1000:.0f} ms")
        if stopped:
            break
    note = ("median of per-round ratios; each round times both on fresh clones of the same data, order "
            "alternating; 'server CPU ratio' is the same comparison in the backends' CPU time (cross-check)")
    paired_cpu = [g / r for g, r in zip(cpu["ghostsync"], cpu["report"], strict=True) if r > 0]
    cpu_ratio = median(paired_cpu) if paired_cpu else float("nan")
    if stopped:
        note = (f"STOPPED: the batched run passed {settings.backfill_cap:g}x the single statement's time after "
                f"{batches[-1]} of ~{-(-n // settings.batch_size)} batches; the ratio is a lower bound")
    return [
        Figure(
            "backfill.time_ratio", "1 backfill", f"batched / single statement ({n:,} ghosts)",
            median(ratios), "x", ("<=", 1.25), "issue",
            context={"ghostsync s": median(times["ghostsync"]), "single s": median(times["report"]),
                     "server CPU ratio": cpu_ratio, "batches": batches[-1] if batches else 0,
                     "batch size": settings.batch_size},
            note=note,
            samples={"ghostsync_s": times["ghostsync"], "single_s": times["report"], "ratio": ratios,
                     "ghostsync_backend_cpu_s": cpu["ghostsync"], "single_backend_cpu_s": cpu["report"]},
        ),
        Figure(
            "backfill.longest_batch", "1 backfill", "longest batch transaction",
            max(longest) * 1000, "ms", ("<=", 1000.0), "issue",
            context={"median of rounds' longest ms": median([x * 1000 for x in longest])},
            note="longest over every round (each batch is one autocommit statement)",
            samples={"longest_batch_ms": [x * 1000 for x in longest]},
        ),
    ]


def backfill_plans(cluster: Cluster, settings: Settings) -> dict[str, str]:
    """Plans behind the backfill figures, for docs/PERFORMANCE.md: one ghostsync batch from the middle
    of auth.users (EXPLAIN ANALYZE, rolled back) and the single statement (EXPLAIN only)."""
    from sqlalchemy.dialects import postgresql

    batch: Any = backfill.current_statements().batch
    compiled = batch.compile(dialect=postgresql.psycopg2.dialect())  # type: ignore[no-untyped-call]
    cluster.clone("b_ghosts", "bf_plan")
    conn = cluster.connect("bf_plan", MIGRATING_ROLE, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM auth.users ORDER BY id OFFSET %s LIMIT 1", (settings.n // 2,))
            middle = cur.fetchone()[0]
            cur.execute("INSERT INTO public.cleanup_audit_log (job_name, status) VALUES ('bench_plan', 'running') "
                        "RETURNING id")
            run_id = cur.fetchone()[0]
            params = dict(compiled.params, run_id=run_id, after=middle, batch_size=settings.batch_size)
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), params)
            batch_plan = "\n".join(row[0] for row in cur.fetchall())
            cur.execute("EXPLAIN " + REPORT_BACKFILL)
            single_plan = "\n".join(row[0] for row in cur.fetchall())
        conn.rollback()
    finally:
        conn.close()
        cluster.drop("bf_plan")
    return {"backfill_batch_from_the_middle": batch_plan, "single_statement": single_plan}


def status_plans(cluster: Cluster, settings: Settings) -> dict[str, str]:
    """Plans behind the status figures (EXPLAIN ANALYZE, read-only): the bare anti-join and the
    queries ``ghostsync status`` sends for the full counts and for ``--since``, captured as sent."""
    from sqlalchemy import event

    engine = engine_for(normalize(cluster.url("b_full", MIGRATING_ROLE)))
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    plans: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            health.full_counts(conn)
            queries = {"status_full_counts": sent[-1]}
            health.count_ghosts(conn, within=settings.since)
            queries["status_since"] = sent[-1]
            queries["bare_anti_join"] = (BARE_ANTI_JOIN, None)
            for name, (sql, params) in queries.items():
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).all()
                plans[name] = "\n".join(row[0] for row in rows)
            conn.rollback()
    finally:
        engine.dispose()
    return plans


# -- 2. signups ------------------------------------------------------------------------------

@dataclass
class Throughput:
    """Per state: ops/s of every round (wall clock) and, over all rounds, ops and CPU seconds."""

    rates: dict[str, list[float]]
    ops: dict[str, int]
    server_cpu_s: dict[str, float]
    client_cpu_s: dict[str, float]

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of a's ops/s over b's, b's slice next to a's."""
        return median([x / y for x, y in zip(self.rates[a], self.rates[b], strict=True) if y > 0])

    def spread(self, a: str, b: str) -> str:
        """Interquartile range of the per-round ratios."""
        values = sorted(x / y for x, y in zip(self.rates[a], self.rates[b], strict=True) if y > 0)
        if len(values) < 4:
            return "-"
        return f"{values[len(values) // 4]:.2f}-{values[(3 * len(values)) // 4]:.2f}"

    def server_us(self, name: str) -> float:
        """Server backend CPU microseconds per operation."""
        return self.server_cpu_s[name] / self.ops[name] * 1e6 if self.ops[name] else float("nan")

    def client_us(self, name: str) -> float:
        return self.client_cpu_s[name] / self.ops[name] * 1e6 if self.ops[name] else float("nan")

    def cpu_ratio(self, a: str, b: str) -> float:
        """a's operations per server CPU second over b's: the database's capacity, a / b."""
        return self.server_us(b) / self.server_us(a)

    def samples(self) -> dict[str, Any]:
        data: dict[str, Any] = {f"{name}_per_s": rates for name, rates in self.rates.items()}
        data |= {f"{name}_server_cpu_us_per_op": [self.server_us(name)] for name in self.rates}
        data |= {f"{name}_client_cpu_us_per_op": [self.client_us(name)] for name in self.rates}
        return data


def _throughput(cluster: Cluster, settings: Settings, names: list[str],
                operation: clients.Operation) -> Throughput:
    """``operation`` on each state's database: a pool of client processes per database, the
    pools taking short slices in turn, round after round."""
    pools: dict[str, clients.Pool] = {}
    try:
        for name in names:
            pools[name] = clients.Pool(cluster.url(STATES[name][0], AUTH_ROLE), operation,
                                       clients=settings.clients)
        rates = clients.run_in_turn(pools, rounds=settings.slices, slice_s=settings.slice_s)
        result = Throughput(rates, {n: p.ops for n, p in pools.items()},
                            {n: p.server_cpu_s for n, p in pools.items()},
                            {n: p.client_cpu_s for n, p in pools.items()})
    finally:
        for pool in pools.values():
            pool.close()
    say("   medians: " + ", ".join(f"{name} {median(rates[name]):,.0f}/s" for name in names)
        + f" ({settings.slices} rounds of {settings.slice_s:g} s slices in turn, {settings.clients} "
          "client processes each)")
    say("   server CPU per operation: " + ", ".join(f"{name} {result.server_us(name):.0f} us" for name in names))
    return result


def bench_signups(cluster: Cluster, settings: Settings) -> list[Figure]:
    names = list(STATES)
    t = _throughput(cluster, settings, names, clients.signup)
    for name in names:
        ghosts = cluster.value(STATES[name][0], GHOSTS)
        if name != "none" and ghosts != 0:
            raise RuntimeError(f"signups on {name} left {ghosts} ghost(s)")
    med = {name: median(t.rates[name]) for name in names}
    cpu_note = ("signups per second of server CPU: the backends' CPU time per signup over every round "
                "(from /proc), which other load on the machine barely changes")
    return [
        Figure("signups.full_vs_minimal", "2 signups", "signups/s: ghostsync head / report's minimal trigger",
               t.ratio("full", "minimal"), "x", (">=", 0.95), "issue",
               context={"head /s": med["full"], "minimal /s": med["minimal"],
                        "IQR": t.spread("full", "minimal"), "clients": settings.clients},
               note="wall clock: median of per-round ratios of signups per second (IQR = interquartile "
                    "range of those ratios)", samples=t.samples()),
        Figure("signups.full_vs_minimal_cpu", "2 signups", "same, per second of server CPU",
               t.cpu_ratio("full", "minimal"), "x", (">=", 0.95), "issue",
               context={"head us/signup": t.server_us("full"), "minimal us/signup": t.server_us("minimal")},
               note=cpu_note),
        Figure("signups.safe_vs_minimal_cpu", "2 signups", "the safety: 0006 / minimal, per server CPU s",
               t.cpu_ratio("safe", "minimal"), "x", (">=", 0.97), "bench",
               context={"0006 us/signup": t.server_us("safe"), "minimal us/signup": t.server_us("minimal"),
                        "wall ratio": t.ratio("safe", "minimal")},
               note="exception block + failure ledger around the profile insert; 'almost nothing' read as "
                    "at most 3%; " + cpu_note),
        Figure("signups.full_vs_safe_cpu", "2 signups", "the update sync: head / 0006, per server CPU s",
               t.cpu_ratio("full", "safe"), "x", (">=", 0.97), "bench",
               context={"head us/signup": t.server_us("full"), "0006 us/signup": t.server_us("safe"),
                        "wall ratio": t.ratio("full", "safe")},
               note="on_auth_user_updated / on_auth_user_deleted present (the signup's UPDATE sets role and "
                    "updated_at only); 'almost nothing' read as at most 3%; " + cpu_note),
        Figure("signups.control", "2 signups", "A/A control: copy of minimal / minimal",
               t.ratio("control", "minimal"), "x", None, None,
               context={"per server CPU s": t.cpu_ratio("control", "minimal"), "IQR": t.spread("control", "minimal")},
               note="two identical databases: how far apart this run measures the same thing"),
        Figure("signups.minimal_vs_none", "2 signups", "report's minimal trigger / no trigger",
               t.ratio("minimal", "none"), "x", None, None,
               context={"minimal /s": med["minimal"], "none /s": med["none"],
                        "per server CPU s": t.cpu_ratio("minimal", "none")},
               note="what any profile trigger costs; context for the figures above"),
    ]


# -- 3. sign-ins -------------------------------------------------------------------------------

def bench_signins(cluster: Cluster, settings: Settings) -> list[Figure]:
    # Seeded users only (none is younger than two hours): the same rows in every state's database,
    # unlike the signups the previous scenario added to each.
    ids = [row[0] for row in cluster.execute(
        "b_none", "SELECT id::text FROM auth.users WHERE created_at < now() - interval '1 hour' "
                  "ORDER BY md5(id::text) LIMIT 50000")]
    present = cluster.value("b_full", "SELECT count(*) FROM auth.users WHERE id = ANY(%s::uuid[])", (ids,))
    if present != len(ids):
        raise RuntimeError(f"sign-in ids: {len(ids) - present} missing from b_full")
    names = ["none", "minimal", "full"]  # minimal changes nothing on UPDATE: the A/A control of none
    for name in names:
        # Every signed-in row updated once and pruned first, in every database alike: the measured
        # sign-ins then run in steady state, not on freshly frozen, full pages.
        db = STATES[name][0]
        cluster.execute(db, "UPDATE auth.users SET last_sign_in_at = last_sign_in_at WHERE id = ANY(%s::uuid[])",
                        (ids,), user=AUTH_ROLE)
        cluster.vacuum(db, "auth.users")
    t = _throughput(cluster, settings, names, clients.sign_in_from(ids))
    return [
        Figure("signins.full_vs_none", "3 sign-ins", "sign-ins/s: ghostsync head / none",
               t.ratio("full", "none"), "x", (">=", 0.97), "issue",
               context={"head /s": median(t.rates["full"]), "none /s": median(t.rates["none"]),
                        "IQR": t.spread("full", "none"), "clients": settings.clients},
               note="UPDATE last_sign_in_at, updated_at; wall clock: median of per-round ratios",
               samples=t.samples()),
        Figure("signins.full_vs_none_cpu", "3 sign-ins", "same, per second of server CPU",
               t.cpu_ratio("full", "none"), "x", (">=", 0.97), "issue",
               context={"head us/sign-in": t.server_us("full"), "none us/sign-in": t.server_us("none")},
               note="the backends' CPU time per sign-in over every round (from /proc)"),
        Figure("signins.control", "3 sign-ins", "A/A control: minimal (no UPDATE trigger) / none",
               t.ratio("minimal", "none"), "x", None, None,
               context={"per server CPU s": t.cpu_ratio("minimal", "none"), "IQR": t.spread("minimal", "none")},
               note="two databases that do the same work on UPDATE: how far apart this run measures the same thing"),
    ]


# -- 4. status ---------------------------------------------------------------------------------

def bench_status(cluster: Cluster, settings: Settings) -> list[Figure]:
    engine = engine_for(normalize(cluster.url("b_full", MIGRATING_ROLE)), application_name="ghostsync-status")
    kinds = ["anti", "full", "since", "full_sql", "since_sql", "three"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    results: dict[str, Any] = {}

    def run(kind: str, conn: Any) -> Any:
        if kind == "anti":
            return conn.execute(text(BARE_ANTI_JOIN)).scalar_one()
        if kind == "full":
            return status.collect(conn)
        if kind == "since":
            return status.collect(conn, since=settings.since)
        if kind == "full_sql":
            return health.full_counts(conn)  # the one query behind the full counts
        if kind == "three":  # the same three figures as three separate queries
            return health.count_ghosts(conn), health.count_orphans(conn), health.count_stale(conn)
        return health.count_ghosts(conn, within=settings.since)

    try:
        with engine.connect() as conn:
            for kind in kinds:  # warm-up: plans, caches, the chain's revision files
                results[kind] = run(kind, conn)
                conn.rollback()
            for order in _orders(kinds, settings.status_reps):
                for kind in order:
                    began = time.perf_counter()
                    run(kind, conn)
                    times[kind].append(time.perf_counter() - began)
                    conn.rollback()
    finally:
        engine.dispose()
    full: status.Status = results["full"]
    if full.ghosts != 0 or not full.healthy:
        raise RuntimeError(f"status of b_full is not healthy: {full.problems}")
    ms = {k: median(v) * 1000 for k, v in times.items()}
    say("   medians: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()))
    return [
        Figure("status.full_vs_anti_join", "4 status", f"full status / bare anti-join ({settings.n:,} users)",
               ms["full"] / ms["anti"], "x", ("<=", 1.5), "bench",
               context={"status ms": ms["full"], "its join ms": ms["full_sql"], "anti-join ms": ms["anti"],
                        "3 separate queries ms": ms["three"]},
               note="status.collect(): ghosts, orphans and stale profiles in one full join, plus triggers, "
                    "functions, revision, audit",
               samples={f"{k}_ms": [x * 1000 for x in v] for k, v in times.items()}),
        Figure("status.since_vs_anti_join", "4 status",
               f"status --since {int(settings.since.total_seconds())}s / bare anti-join",
               ms["since"] / ms["anti"], "x", ("<=", 1.0), "bench",
               context={"status ms": ms["since"], "its query ms": ms["since_sql"], "anti-join ms": ms["anti"]},
               note="auth.users has no index on created_at (the auth schema is closed to new indexes), so the "
                    "window is found by a scan"),
    ]


# -- 5. upgrade ---------------------------------------------------------------------------------

def _report_fix_script() -> str:
    """The report's fix in one transaction: its function, its trigger, its single INSERT ... SELECT."""
    minimal = revision_module("ghostsync_0002")
    return str(minimal.CREATE_FUNCTION + minimal.CREATE_TRIGGER + REPORT_BACKFILL + ";\n")


def _lock_waits(log: str, pids: list[int]) -> tuple[float, int, int]:
    """Longest logged lock wait (ms) of ``pids``, how many waits ended, how many never logged an end."""
    wanted = set(pids)
    longest = 0.0
    ended = 0
    waiting: set[tuple[int, str]] = set()
    for line in log.splitlines():
        m = LOCK_ACQUIRED.search(line)
        if m and int(m.group(1)) in wanted:
            longest = max(longest, float(m.group(4)))
            ended += 1
            waiting.discard((int(m.group(1)), m.group(3)))
            continue
        m = LOCK_WAITING.search(line)
        if m and int(m.group(1)) in wanted:
            longest = max(longest, float(m.group(4)))
            waiting.add((int(m.group(1)), m.group(3)))
    return longest, ended, len(waiting)


def _alembic_upgrade(url: str, timeout: float) -> tuple[int | None, str]:
    """``alembic upgrade head`` as a deploy pipeline runs it; None as the code when stopped at ``timeout``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), "-x", f"database_url={url}", "upgrade", "head"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out


def bench_upgrade(cluster: Cluster, settings: Settings) -> list[Figure]:
    """``alembic upgrade head`` vs the report's fix, each under the same paced signup stream.

    The alembic run is stopped at ``upgrade_cap`` times the report fix's time (at least 120 s);
    its time is then a lower bound.
    """
    n = settings.n
    script = _report_fix_script()
    rows: dict[str, list[dict[str, float]]] = {"ghostsync": [], "report": []}
    stopped = False
    for order in _orders(["report", "ghostsync"], settings.upgrade_reps):
        for arm in order:
            db = f"up_{arm}"
            cluster.clone("b_app", db)
            cluster.checkpoint()
            offset = cluster.log_offset()
            cap = max(120.0, settings.upgrade_cap * median([row["seconds"] for row in rows["report"]])) \
                if rows["report"] else 3600.0
            stream = clients.Stream(
                cluster.url(db, AUTH_ROLE), clients.signup, clients=settings.stream_clients, duration_s=None,
                max_ops_per_client=1_000_000, rate_per_client=settings.stream_rate, hard_limit_s=cap + 600,
            ).start()
            time.sleep(settings.baseline_s)
            began = time.perf_counter()
            if arm == "ghostsync":
                code, output = _alembic_upgrade(cluster.url(db, MIGRATING_ROLE), cap)
            else:
                proc = cluster.psql(db, script, timeout=3600)
                code, output = proc.returncode, proc.stdout + proc.stderr
            ended = time.perf_counter()
            time.sleep(0.5)
            result = stream.stop()
            if code is None:
                stopped = True
            elif code != 0:
                raise RuntimeError(f"upgrade arm {arm} failed: {output}")
            if result.errors:
                raise RuntimeError(f"signups during {arm}: {result.errors} error(s), first: {result.first_error}")
            if code is not None and cluster.value(db, GHOSTS) != 0:
                raise RuntimeError(f"upgrade arm {arm} left ghosts")
            longest_wait, waits, unended = _lock_waits(cluster.log_since(offset), result.pids)
            batch = re.search(r"longest batch (\d+) ms", output)
            row = {
                "seconds": ended - began,
                "lock_wait_ms": longest_wait,
                "lock_waits": waits,
                "unended_waits": unended,
                "signups": result.ops,
                "max_latency_during_ms": result.max_latency_between(began, ended) * 1000,
                "max_latency_before_ms": result.max_latency_between(stream.t0, began) * 1000,
                "longest_batch_ms": float(batch.group(1)) if batch else float("nan"),
            }
            rows[arm].append(row)
            cluster.drop(db)
            say(f"   {arm}: {row['seconds']:.2f} s{' (STOPPED)' if code is None else ''}, longest signup lock "
                f"wait {longest_wait:.1f} ms ({waits} wait(s) over 5 ms), signup latency max "
                f"{row['max_latency_during_ms']:.1f} ms during vs {row['max_latency_before_ms']:.1f} ms before, "
                f"{result.ops} signups")
        if stopped:
            break

    def med(arm: str, key: str) -> float:
        return median([row[key] for row in rows[arm]])

    gs_wait = max(row["lock_wait_ms"] for row in rows["ghostsync"])
    rep_wait = max(row["lock_wait_ms"] for row in rows["report"])
    time_note = ("alembic CLI process (interpreter start, 7 revisions, adoption checks, audit) vs psql -1 "
                 "applying the report's function, trigger and single INSERT ... SELECT; context only")
    if stopped:
        time_note = (f"STOPPED at {settings.upgrade_cap:g}x the report fix's time (at least 120 s): the "
                     "time and the ratio are lower bounds")
    return [
        Figure("upgrade.time_ratio", "5 upgrade",
               f"alembic upgrade head / report's fix ({n:,} users, {n // 10:,} ghosts)",
               med("ghostsync", "seconds") / med("report", "seconds"), "x", None, None,
               context={"alembic s": med("ghostsync", "seconds"), "report fix s": med("report", "seconds"),
                        "longest batch ms": med("ghostsync", "longest_batch_ms")},
               note=time_note,
               samples={k: [row[k] for row in rows["ghostsync"]] for k in ("seconds", "longest_batch_ms")}
               | {f"report_{k}": [row[k] for row in rows["report"]] for k in ("seconds",)}),
        Figure("upgrade.longest_signup_lock_wait", "5 upgrade", "longest signup lock wait during upgrade",
               gs_wait, "ms", ("<=", 1000.0), "bench",
               context={"report fix ms": rep_wait,
                        "signups/s": settings.stream_clients * settings.stream_rate},
               note="from the server log (log_lock_waits, deadlock_timeout 5 ms: shorter waits are not "
                    "logged and count as 0), for the backends of the concurrent signup stream",
               samples={"lock_wait_ms": [row["lock_wait_ms"] for row in rows["ghostsync"]],
                        "report_lock_wait_ms": [row["lock_wait_ms"] for row in rows["report"]],
                        "waits_over_5ms": [row["lock_waits"] for row in rows["ghostsync"]]}),
        Figure("upgrade.signup_latency_ratio", "5 upgrade", "max signup latency: during / before upgrade",
               med("ghostsync", "max_latency_during_ms") / med("ghostsync", "max_latency_before_ms"),
               "x", None, None,
               context={"during ms": med("ghostsync", "max_latency_during_ms"),
                        "before ms": med("ghostsync", "max_latency_before_ms"),
                        "report fix during ms": med("report", "max_latency_during_ms")},
               note="client-side, same stream, the baseline window just before the upgrade starts"),
    ]
