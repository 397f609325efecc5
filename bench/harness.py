"""The bench's server and databases, built on the test harness (``ghostsync.testing``).

One ``ThrowawayServer`` (loopback only, stopped at the end) made Supabase-like
with ``ghostsync.testing.supabase``; ghostsync installed with the packaged
Alembic chain (``ghostsync.chain.alembic_config``), as ``ghostsync migrate``
does. Every database a measurement compares is a ``CREATE DATABASE ...
TEMPLATE`` clone of one seeded template, so both sides of a ratio start from
byte-identical data.

Templates (made on first use, then kept for the rest of the process):

- ``auth``: N auth users seeded set-based as ``supabase_auth_admin`` with the
  column shapes the auth service leaves (email, phone, anonymous and SSO
  users; random v4 ids; creation times over three years, none in the last two
  hours), frozen and analyzed;
- ``none``: ghostsync_0001 (``public.users``, no trigger), a profile for everyone;
- ``minimal``: ``none`` upgraded to ghostsync_0003: the incident report's
  minimal AFTER INSERT trigger (ghostsync_0002's function, kept as it is);
- ``head``: ``minimal`` upgraded to head;
- ``ghosts``: ``head`` with ``public.users`` emptied: N ghosts;
- ``app``: the app's own ``public.users`` with a profile for all but every
  tenth user, no ghostsync (an upgrade's input);
- ``tiny``: 1,000 users at head (the quick check's fixed point).

A measurement module gets the workspace of its scale with ``workspace(scale, major)``:
one per process, so modules run one after another share the server and the
templates; ``close_all()`` stops them.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from ghostsync.testing import binaries
from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.server import SUPERUSER, ThrowawayServer
from ghostsync.testing.supabase import (
    APP_PROFILES_SQL,
    grant_database_privileges,
    make_cluster_supabase_like,
    make_database_supabase_like,
)

REPO = Path(__file__).resolve().parent.parent
MIGRATING_ROLE = "postgres"
SCALES = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
SEED_CHUNK = 1_000_000
TINY = 1_000

# Server settings for measuring: no autovacuum run lands in one side of a comparison
# only (the bench vacuums explicitly). deadlock_timeout stays the server's default: each
# of ghostsync's lock waits is capped at half of it, so the upgrade runs with its real budget.
SERVER_SETTINGS = {
    "autovacuum": "off",
}

SEED_AUTH_USERS = """
INSERT INTO auth.users (
  instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
  confirmation_token, confirmation_sent_at, recovery_token, email_change_token_new, email_change,
  last_sign_in_at, raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at,
  phone, phone_confirmed_at, is_sso_user, is_anonymous
)
SELECT
  '00000000-0000-0000-0000-000000000000'::uuid,
  gen_random_uuid(),
  'authenticated',
  'authenticated',
  CASE WHEN k.kind IN ('phone', 'anonymous') THEN NULL ELSE format('user%%s@example.com', g) END,
  CASE WHEN k.kind IN ('email', 'phone') THEN '$2a$10$' || substr(md5(g::text) || md5((-g)::text), 1, 53) END,
  CASE WHEN k.kind IN ('email', 'sso') AND g %% 5 <> 0 THEN t.created + interval '7 minutes' END,
  '',
  CASE WHEN k.kind = 'email' THEN t.created END,
  '', '', '',
  CASE WHEN g %% 3 <> 0 THEN t.created + interval '1 day' END,
  jsonb_build_object('provider', k.kind, 'providers', jsonb_build_array(k.kind)),
  CASE WHEN k.kind = 'anonymous' THEN '{}'::jsonb
       ELSE jsonb_build_object('full_name', 'User ' || g, 'avatar_url', 'https://example.com/a/' || g || '.png') END,
  NULL,
  t.created,
  t.created + interval '1 day',
  CASE WHEN k.kind = 'phone' THEN '1555' || lpad(g::text, 9, '0') END,
  CASE WHEN k.kind = 'phone' THEN t.created + interval '3 minutes' END,
  k.kind = 'sso',
  k.kind = 'anonymous'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
CROSS JOIN LATERAL (
  SELECT CASE g %% 20 WHEN 0 THEN 'phone' WHEN 1 THEN 'anonymous' WHEN 2 THEN 'sso' ELSE 'email' END AS kind
) AS k
CROSS JOIN LATERAL (
  -- oldest first, spread over three years, none in the last two hours
  SELECT now() - interval '2 hours' - interval '3 years' * (1 - g::float8 / %(total)s) AS created
) AS t
"""

# Profiles the app (or ghostsync) wrote long ago; every ``ghost_every``-th user (by signup order) has none.
SEED_PROFILES = """
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT id, email, email_confirmed_at IS NOT NULL, created_at, updated_at
FROM (SELECT id, email, email_confirmed_at, created_at, updated_at,
             row_number() OVER (ORDER BY created_at, id) AS n
      FROM auth.users) AS u
WHERE %(ghost_every)s = 0 OR u.n %% %(ghost_every)s <> 0
"""

# The incident report's repair: one statement over the whole table (the baseline, as it is).
REPORT_BACKFILL = """
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT a.id, a.email, a.email_confirmed_at IS NOT NULL, a.created_at, a.updated_at
FROM auth.users a
LEFT JOIN public.users p ON p.id = a.id
WHERE p.id IS NULL
"""

# The incident report's own ghost count, as the issue quotes it.
REPORT_GHOST_COUNT = ("SELECT count(*) FROM auth.users au LEFT JOIN public.users pu ON au.id = pu.id "
                      "WHERE pu.id IS NULL")


def say(message: str) -> None:
    print(message, flush=True)


def scale_users(scale: str | int) -> int:
    if isinstance(scale, int):
        return scale
    value = scale.strip().lower()
    if value in SCALES:
        return SCALES[value]
    match = re.fullmatch(r"(\d+)([km]?)", value)
    if not match:
        raise ValueError(f"bad scale {scale!r}: use 100k, 1m, 10m or a number of users")
    return int(match.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2)]


def scale_name(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


class Cluster:
    """One throwaway Supabase-like server and the databases of a run."""

    def __init__(self, major: int) -> None:
        found = binaries.find(major)
        if found is None:
            raise SystemExit(f"PostgreSQL {major} is not available on this machine: run `make bench` "
                             "(its `servers` step provides it) or pick another with --pg")
        self.major = major
        self.binaries = found
        self.server = ThrowawayServer(found)
        self.running = False

    def start(self) -> Cluster:
        self.server.start()
        make_cluster_supabase_like(self.server.url())
        for name, value in SERVER_SETTINGS.items():
            self.execute("postgres", f"ALTER SYSTEM SET {name} = '{value}'")
        self.execute("postgres", "SELECT pg_reload_conf()")
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self.server.stop()
            self.running = False

    # -- connections ---------------------------------------------------------------
    def url(self, dbname: str, user: str = SUPERUSER) -> str:
        return self.server.url(dbname, user=user)

    def connect(self, dbname: str, user: str = SUPERUSER, *, autocommit: bool = True) -> Any:
        conn = psycopg2.connect(self.url(dbname, user))
        conn.autocommit = autocommit
        return conn

    def execute(self, dbname: str, statement: str, params: Any = None, *,
                user: str = SUPERUSER) -> list[tuple[Any, ...]]:
        conn = self.connect(dbname, user)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def value(self, dbname: str, statement: str, params: Any = None, *, user: str = SUPERUSER) -> Any:
        rows = self.execute(dbname, statement, params, user=user)
        return rows[0][0] if rows else None

    # -- databases -------------------------------------------------------------------
    def create_supabase_database(self, name: str) -> None:
        self.drop(name)
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        make_database_supabase_like(self.url(name))

    def clone(self, template: str, name: str) -> None:
        """A byte-identical copy of ``template`` (which must have no open connection)."""
        self.drop(name)
        strategy = " STRATEGY = FILE_COPY" if self.major >= 15 else ""
        self.execute("postgres", f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        grant_database_privileges(self.url(name))

    def drop(self, name: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def checkpoint(self) -> None:
        self.execute("postgres", "CHECKPOINT")

    def vacuum(self, dbname: str, *tables: str) -> None:
        for table in tables:
            self.execute(dbname, f"VACUUM (FREEZE, ANALYZE) {table}")

    def upgrade(self, dbname: str, target: str = "head", **x: str) -> None:
        """The packaged chain upgraded as ``ghostsync migrate upgrade`` does, as ``postgres`` (setup only)."""
        from alembic import command

        from ghostsync.chain import alembic_config

        config = alembic_config()
        config.cmd_opts = argparse.Namespace(x=[f"database_url={self.url(dbname, MIGRATING_ROLE)}"]
                                             + [f"{k}={v}" for k, v in x.items()])
        command.upgrade(config, target)

    def seed_auth_users(self, dbname: str, n: int) -> None:
        conn = self.connect(dbname, autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET ROLE {AUTH_ROLE}")
                for first in range(1, n + 1, SEED_CHUNK):
                    cur.execute(SEED_AUTH_USERS, {"first": first, "last": min(n, first + SEED_CHUNK - 1), "total": n})
                    conn.commit()
        finally:
            conn.close()

    def seed_profiles(self, dbname: str, ghost_every: int = 0) -> None:
        conn = self.connect(dbname, autocommit=False)
        try:
            with conn.cursor() as cur:
                # written long ago by the app: the foreign key holds by construction
                cur.execute("SET session_replication_role = replica")
                cur.execute(SEED_PROFILES, {"ghost_every": ghost_every})
            conn.commit()
        finally:
            conn.close()

    # -- server facts ------------------------------------------------------------------
    def psql_argv(self, dbname: str, user: str = MIGRATING_ROLE) -> list[str]:
        return [self.server.psql(), "-X", "-q", "-d", self.url(dbname, user)]

    def facts(self) -> dict[str, Any]:
        version = self.value("postgres", "SELECT version()")
        settings = dict(self.execute(
            "postgres",
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'autovacuum', "
            "'max_connections', 'work_mem', 'deadlock_timeout', 'log_lock_waits', "
            "'max_parallel_workers_per_gather', 'jit')",
        ))
        return {"major": self.binaries.major, "version": version,
                "binaries": f"{self.binaries.bindir} ({self.binaries.source})", "settings": settings}

    def database_bytes(self) -> int:
        return int(self.value("postgres", "SELECT sum(pg_database_size(datname)) FROM pg_database"))


# What each template is made from (``template`` makes the parent first when it is missing).
PARENT = {"none": "auth", "minimal": "none", "head": "minimal", "ghosts": "head", "app": "auth"}
# The templates the run's measurements use, when the runner knows them: a template made only to derive
# one of these is dropped as soon as what it was needed for is made (10m: one template is ~7 GB).
KEEP: set[str] | None = None


class Workspace:
    """A cluster and the templates of one scale, made on first use."""

    def __init__(self, n: int, major: int) -> None:
        self.n = n
        self.major = major
        self.cluster = Cluster(major).start()
        self.templates: set[str] = set()
        self.setup_seconds: dict[str, float] = {}
        self.peak_bytes = 0

    def _step(self, name: str, fn: Callable[[], None]) -> None:
        began = time.perf_counter()
        fn()
        self.setup_seconds[name] = round(time.perf_counter() - began, 2)
        self.note_disk()
        say(f"   setup {name}: {self.setup_seconds[name]:.1f} s")

    def note_disk(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.cluster.database_bytes())

    def template(self, name: str) -> str:
        """The template database ``t_<name>``, made (with what it derives from) if need be."""
        db = f"t_{name}"
        if name in self.templates:
            return db
        c, n = self.cluster, self.n
        one_batch = {"batch_size": str(max(n, 1) + 1)}  # setup is not measured: one backfill batch
        if name == "auth":
            def make() -> None:
                c.create_supabase_database(db)
                c.seed_auth_users(db, n)
                c.vacuum(db, "auth.users")
        elif name == "none":
            def make() -> None:
                c.clone(self.template("auth"), db)
                c.upgrade(db, "ghostsync_0001")
                c.seed_profiles(db)
                c.vacuum(db, "auth.users", "public.users")
        elif name == "minimal":
            def make() -> None:
                c.clone(self.template("none"), db)
                c.upgrade(db, "ghostsync_0003", **one_batch)
                # the upgrade's backfill walked (and key-share locked) every row: freeze again
                c.vacuum(db, "auth.users", "public.users", "public.cleanup_audit_log")
        elif name == "head":
            def make() -> None:
                c.clone(self.template("minimal"), db)
                c.upgrade(db, "head", **one_batch)
                c.vacuum(db, "auth.users", "public.users", "public.cleanup_audit_log")
        elif name == "ghosts":
            def make() -> None:
                c.clone(self.template("head"), db)
                c.execute(db, "TRUNCATE public.users")
                # Not ANALYZE public.users: statistics saying "empty" would plan the single statement
                # as a nested loop over the table it fills (docs/PERFORMANCE.md); truncated, it has none.
                c.vacuum(db, "auth.users")
        elif name == "app":
            def make() -> None:
                c.clone(self.template("auth"), db)
                c.execute(db, APP_PROFILES_SQL, user=MIGRATING_ROLE)
                c.seed_profiles(db, ghost_every=10)
                c.vacuum(db, "auth.users", "public.users")
        elif name == "tiny":
            def make() -> None:
                c.create_supabase_database(db)
                c.seed_auth_users(db, TINY)
                c.upgrade(db, "head")
                c.vacuum(db, "auth.users", "public.users", "public.cleanup_audit_log")
        else:
            raise KeyError(name)
        self._step(f"template {name} ({TINY if name == 'tiny' else n:,} users)", make)
        self.templates.add(name)
        if KEEP is not None:
            self.release(KEEP | {name})
        return db

    def release(self, keep: set[str]) -> None:
        """Drop every template not in ``keep`` nor needed to make one in it that is not made yet
        (the disk space back: at 10m a template is several gigabytes)."""
        needed = set(keep)
        for name in list(keep):
            while name not in self.templates and name in PARENT:
                name = PARENT[name]
                needed.add(name)
        for name in sorted(self.templates - needed):
            self.cluster.drop(f"t_{name}")
            self.templates.discard(name)

    def clone(self, template: str, name: str) -> str:
        """A fresh copy of template ``template`` named ``name`` (replacing any of that name)."""
        self.cluster.clone(self.template(template), name)
        return name

    def drop(self, *names: str) -> None:
        self.note_disk()
        for name in names:
            self.cluster.drop(name)

    def close(self) -> None:
        self.cluster.stop()


_WORKSPACES: dict[tuple[int, int], Workspace] = {}


def workspace(scale: str | int, major: int = 17) -> Workspace:
    """The workspace of ``scale`` on PostgreSQL ``major``: one per process, shared by the modules."""
    key = (scale_users(scale), major)
    if key not in _WORKSPACES:
        if _WORKSPACES:  # another scale or major: its server's memory and disk back first
            close_all()
        _WORKSPACES[key] = Workspace(*key)
    return _WORKSPACES[key]


def current() -> Workspace | None:
    return next(iter(_WORKSPACES.values()), None)


def close_all() -> None:
    for ws in list(_WORKSPACES.values()):
        ws.close()
    _WORKSPACES.clear()


atexit.register(close_all)


# -- measuring --------------------------------------------------------------------------

def backend_pid(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process on this machine has used, in nanosecond resolution (/proc/PID/schedstat:
    time on a CPU); from /proc/PID/stat in clock ticks where schedstat is missing; None if gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def code_facts() -> dict[str, Any]:
    """Which ghostsync was measured: the commit, and whether the package differs from it."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "ghostsync")
    return {"commit": git("rev-parse", "HEAD"),
            "ghostsync_changed_since_commit": None if changed is None else bool(changed)}


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    memory_gb = None
    try:
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        if match:
            memory_gb = round(int(match.group(1)) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gb": memory_gb, "os": platform.platform(),
            "python": platform.python_version(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def orders(names: list[str], rounds: int) -> list[list[str]]:
    """Round r runs the names rotated by r, the whole cycle reversed every other time round: every
    name takes every position about equally often (two names: ab, ba, ba, ab, ab, ...)."""
    out = []
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        out.append(order if (r // len(names)) % 2 == 0 else list(reversed(order)))
    return out
