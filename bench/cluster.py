"""The benchmark's throwaway server, its databases and how they are seeded.

One ``ThrowawayServer`` (loopback only, stopped at the end) made Supabase-like
with ``ghostsync.testing.supabase``. Every database a measurement compares
is a ``CREATE DATABASE ... TEMPLATE`` clone of one seeded database, so both
sides of a ratio start from byte-identical data.

Seeding is set-based (``INSERT ... SELECT generate_series``) as
``supabase_auth_admin``, with the column shapes the auth service leaves:
email, phone, anonymous and SSO users, bcrypt-sized password hashes, jsonb
metadata, confirmation and sign-in times spread over three years, random v4
ids (as the auth service generates them).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg2
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from ghostsync.testing import binaries
from ghostsync.testing.server import SUPERUSER, ThrowawayServer
from ghostsync.testing.supabase import (
    grant_database_privileges,
    make_cluster_supabase_like,
    make_database_supabase_like,
)

REPO = Path(__file__).resolve().parent.parent
ALEMBIC_INI = REPO / "alembic.ini"
MIGRATING_ROLE = "postgres"
AUTH_ROLE = "supabase_auth_admin"
SEED_CHUNK = 1_000_000

# Server settings for measuring: no autovacuum run lands in one side of a
# comparison only (the bench vacuums explicitly), and every lock wait longer
# than 5 ms is logged with its length ("process N acquired ... after X ms").
SERVER_SETTINGS = {
    "autovacuum": "off",
    "log_lock_waits": "on",
    "deadlock_timeout": "5ms",
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

# Profiles the app wrote itself; every ``ghost_every``-th user (by signup
# order) has none.
SEED_PROFILES = """
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT id, email, email_confirmed_at IS NOT NULL, created_at, updated_at
FROM (SELECT id, email, email_confirmed_at, created_at, updated_at,
             row_number() OVER (ORDER BY created_at, id) AS n
      FROM auth.users) AS u
WHERE %(ghost_every)s = 0 OR u.n %% %(ghost_every)s <> 0
"""


def alembic_config(url: str, **x: str) -> Config:
    """The repository's alembic.ini, pointed at ``url`` the way ``-x database_url`` does."""
    config = Config(str(ALEMBIC_INI))
    config.cmd_opts = argparse.Namespace(x=[f"database_url={url}"] + [f"{k}={v}" for k, v in x.items()])
    config.attributes["configure_logger"] = False
    return config


def revision_module(revision: str) -> Any:
    """A revision file's module, for its frozen SQL text."""
    return ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_revision(revision).module


class Cluster:
    """One throwaway Supabase-like server and the databases of the run."""

    def __init__(self, major: int) -> None:
        found = binaries.find(major)
        if found is None:
            raise SystemExit(
                f"PostgreSQL {major} is not available on this machine: run `make bench` "
                f"(its `servers` step provides it) or pick another with --pg"
            )
        self.binaries = found
        self.server = ThrowawayServer(found)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Cluster:
        self.server.start()
        make_cluster_supabase_like(self.server.url())
        for name, value in SERVER_SETTINGS.items():
            self.execute("postgres", f"ALTER SYSTEM SET {name} = '{value}'")
        self.execute("postgres", "SELECT pg_reload_conf()")
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connections -------------------------------------------------------
    def url(self, dbname: str, user: str = SUPERUSER) -> str:
        return self.server.url(dbname, user=user)

    def connect(self, dbname: str, user: str = SUPERUSER, *, autocommit: bool = True, **kw: Any) -> Any:
        conn = psycopg2.connect(self.url(dbname, user), **kw)
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

    # -- databases ---------------------------------------------------------
    def create_supabase_database(self, name: str) -> None:
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        make_database_supabase_like(self.url(name))

    def clone(self, template: str, name: str) -> None:
        """A byte-identical copy of ``template`` (which must have no open connection)."""
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.execute("postgres", f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        grant_database_privileges(self.url(name))

    def drop(self, name: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def checkpoint(self) -> None:
        self.execute("postgres", "CHECKPOINT")

    def vacuum(self, dbname: str, *tables: str) -> None:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                for table in tables:
                    cur.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
        finally:
            conn.close()

    def upgrade(self, dbname: str, target: str = "head", **x: str) -> None:
        """``alembic upgrade`` as the ``postgres`` role (in-process; setup only, not measured)."""
        command.upgrade(alembic_config(self.url(dbname, MIGRATING_ROLE), **x), target)

    def seed_auth_users(self, dbname: str, n: int, *, skip_triggers: bool = False) -> None:
        """``n`` auth users, set-based, as supabase_auth_admin, in chunks of a million."""
        conn = self.connect(dbname, autocommit=False)
        try:
            with conn.cursor() as cur:
                if skip_triggers:
                    cur.execute("SET session_replication_role = replica")
                cur.execute(f"SET ROLE {AUTH_ROLE}")
                for first in range(1, n + 1, SEED_CHUNK):
                    last = min(n, first + SEED_CHUNK - 1)
                    cur.execute(SEED_AUTH_USERS, {"first": first, "last": last, "total": n})
                    conn.commit()
        finally:
            conn.close()

    def seed_profiles(self, dbname: str, ghost_every: int = 0) -> None:
        """Profiles for the auth users (all, or all but every ``ghost_every``-th)."""
        conn = self.connect(dbname, autocommit=False)
        try:
            with conn.cursor() as cur:
                # The app wrote these long ago; the foreign key holds by construction.
                cur.execute("SET session_replication_role = replica")
                cur.execute(SEED_PROFILES, {"ghost_every": ghost_every})
            conn.commit()
        finally:
            conn.close()

    # -- server facts ------------------------------------------------------
    def log_offset(self) -> int:
        try:
            return self.server.logfile.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.server.logfile, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def psql(self, dbname: str, script: str, *, user: str = MIGRATING_ROLE, single_transaction: bool = True,
             timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        args = [self.server.psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(dbname, user)]
        if single_transaction:
            args.insert(1, "-1")
        return subprocess.run(args, input=script, capture_output=True, text=True, timeout=timeout)

    def facts(self) -> dict[str, Any]:
        version = self.value("postgres", "SELECT version()")
        settings = dict(self.execute(
            "postgres",
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'autovacuum', "
            "'max_connections', 'work_mem', 'deadlock_timeout', 'log_lock_waits')",
        ))
        return {
            "major": self.binaries.major,
            "version": version,
            "binaries": f"{self.binaries.bindir} ({self.binaries.source})",
            "settings": settings,
        }


def backend_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a server backend has used, from /proc; None where unreadable.

    The server runs on this machine (loopback only). CPU time is far less sensitive than wall
    time to other processes competing for the cores, so it cross-checks a wall-time ratio.
    """
    from bench.clients import process_cpu_seconds

    return process_cpu_seconds(pid)


def code_facts() -> dict[str, Any]:
    """Which ghostsync was measured: the commit, and whether ghostsync/ or alembic/ differ from it."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "ghostsync", "alembic")
    return {"commit": git("rev-parse", "HEAD"), "ghostsync_or_alembic_changed_since_commit":
            None if changed is None else bool(changed)}


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
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
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
