"""Seeding and checks of the reliability tests: many users set-based, and what "no harm done" means.

Seeding is set-based (INSERT ... SELECT generate_series): the app's own
``public.users`` with a profile for every existing member, and ghosts
without one. Before ghostsync is installed ghosts are written as the auth
service's role; once its trigger exists, ghosts are written the way they
appear in real life after a dump and restore: as the superuser with
``session_replication_role = replica``, so no trigger fires.

Provenance: a test-owned trigger on ``public.users`` records, for every
profile written, the top-level transaction that wrote it. A profile written
by the signup trigger shares its transaction with its auth user's row
(``auth.users.xmin``); one written by the backfill does not. So the number of
profiles the backfill created is known exactly, and the audit log's
``records_affected`` must add up to it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.fixtures import SupabaseDatabase
from tests.paths import REPO
from ghostsync.testing.loadgen import LoadReport, SignupLoad
from ghostsync.testing.supabase import APP_PROFILES_SQL
from tests import reliability
from tests.seeding import duplicate_count, ghost_count

JOB = "backfill_ghost_users"
_series = itertools.count(1)

SEED_AUTH_USERS = """
INSERT INTO auth.users (
  instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, phone,
  raw_app_meta_data, raw_user_meta_data, is_sso_user, is_anonymous, created_at, updated_at
)
SELECT '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated',
       CASE WHEN g %% 10 IN (7, 8) THEN NULL ELSE %(prefix)s || g || '@example.com' END,
       CASE WHEN g %% 10 = 8 THEN NULL ELSE '$2a$10$' || repeat('x', 53) END,
       CASE WHEN g %% 3 = 0 THEN now() END,
       CASE WHEN g %% 10 = 7 THEN %(phone)s || lpad(g::text, 9, '0') END,
       jsonb_build_object('provider', CASE g %% 10 WHEN 7 THEN 'phone' WHEN 8 THEN 'anonymous' ELSE 'email' END),
       '{}'::jsonb, false, g %% 10 = 8,
       now() - g * interval '1 second', now() - g * interval '1 second'
FROM generate_series(1, %(n)s) AS g
"""

PROFILES_FOR_EVERY_AUTH_USER = """
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, u.created_at, u.updated_at
FROM auth.users AS u
WHERE NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = u.id)
"""

PROVENANCE = """
CREATE SCHEMA IF NOT EXISTS loadtest;
CREATE TABLE IF NOT EXISTS loadtest.profile_origin (id uuid NOT NULL, top_xid bigint NOT NULL);
CREATE OR REPLACE FUNCTION loadtest.record_profile_origin() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $f$
BEGIN
  INSERT INTO loadtest.profile_origin (id, top_xid)
  VALUES (NEW.id, pg_catalog.pg_current_xact_id()::text::bigint % 4294967296);
  RETURN NULL;
END
$f$;
CREATE TRIGGER zz_loadtest_profile_origin AFTER INSERT ON public.users
  FOR EACH ROW EXECUTE FUNCTION loadtest.record_profile_origin();
"""

BACKFILLED = """
SELECT count(*) FROM loadtest.profile_origin AS o JOIN auth.users AS u ON u.id = o.id
WHERE o.top_xid <> u.xmin::text::bigint
"""


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def seed_auth_users(db: SupabaseDatabase, n: int, kind: str, *, bypass_triggers: bool = False) -> None:
    """``n`` auth users (email, phone, anonymous; a third confirmed), as the auth service's role,
    or as the superuser with triggers off (``bypass_triggers``: how ghosts appear after a restore)."""
    if n <= 0:
        return
    params = {"prefix": f"{kind}-{_tag()}-", "phone": f"+2{next(_series):03d}", "n": n}
    if bypass_triggers:
        db.sql("SET session_replication_role = replica; " + SEED_AUTH_USERS, params)
    else:
        db.sql(SEED_AUTH_USERS, params, user="supabase_auth_admin")


def seed_existing(db: SupabaseDatabase, members: int, ghosts: int) -> None:
    """The app before ghostsync: its own public.users, ``members`` users with a profile, ``ghosts`` without."""
    db.sql(APP_PROFILES_SQL, user="postgres")
    db.sql(PROVENANCE)
    seed_auth_users(db, members, "member")
    db.sql(PROFILES_FOR_EVERY_AUTH_USER, user="postgres")
    seed_auth_users(db, ghosts, "ghost")
    db.sql("ANALYZE auth.users; ANALYZE public.users")


@dataclass(frozen=True)
class Snapshot:
    audit_id: int
    backfilled: int


def snapshot(db: SupabaseDatabase) -> Snapshot:
    audit_id = 0
    if db.value("SELECT to_regclass('public.cleanup_audit_log')") is not None:
        audit_id = int(db.value("SELECT coalesce(max(id), 0) FROM public.cleanup_audit_log"))
    return Snapshot(audit_id=audit_id, backfilled=int(db.value(BACKFILLED)))


@dataclass
class Outcome:
    ghosts: int
    duplicates: int
    orphans: int
    sync_failures: int
    missing_profiles: int
    failed_signups_kept: int
    runs: list[tuple[Any, ...]]
    records_affected: int
    backfilled: int
    problems: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> list[str]:
        return [run[1] for run in self.runs]

    def line(self) -> str:
        return (f"ghosts left {self.ghosts}, duplicate profiles {self.duplicates}, orphans {self.orphans}, "
                f"failed syncs {self.sync_failures}; audit runs {'+'.join(self.statuses) or 'none'}, "
                f"records_affected {self.records_affected} = profiles backfilled {self.backfilled}")


def verify(
    db: SupabaseDatabase,
    before: Snapshot,
    report: LoadReport | None = None,
    *,
    statuses: tuple[str, ...] = ("succeeded",),
) -> Outcome:
    """Everything that must hold after a phase: no ghost, no duplicate, every signup has its profile,
    and the audit runs since ``before`` are closed and add up to the profiles the backfill created."""
    ok_ids = report.succeeded_ids if report else []
    failed_ids = [s.user_id for s in report.signups if not s.ok] if report else []
    missing = int(db.value(
        "SELECT count(*) FROM unnest(%s::uuid[]) AS s(id) WHERE NOT EXISTS "
        "(SELECT 1 FROM public.users AS p WHERE p.id = s.id)", (ok_ids,))) if ok_ids else 0
    kept = int(db.value("SELECT count(*) FROM auth.users WHERE id = ANY(%s::uuid[])", (failed_ids,))) \
        if failed_ids else 0
    orphans = int(db.value(
        "SELECT count(*) FROM public.users AS p WHERE NOT EXISTS (SELECT 1 FROM auth.users AS u WHERE u.id = p.id)"))
    failures = 0
    if db.value("SELECT to_regclass('ghostsync.sync_failures')") is not None:
        failures = int(db.value("SELECT count(*) FROM ghostsync.sync_failures"))
    runs = db.sql(
        "SELECT id, status, records_affected, started_at, finished_at, details FROM public.cleanup_audit_log "
        "WHERE job_name = %s AND id > %s AND status <> 'dry_run' ORDER BY id", (JOB, before.audit_id))
    outcome = Outcome(
        ghosts=ghost_count(db), duplicates=duplicate_count(db), orphans=orphans, sync_failures=failures,
        missing_profiles=missing, failed_signups_kept=kept, runs=runs,
        records_affected=sum(int(r[2]) for r in runs),
        backfilled=int(db.value(BACKFILLED)) - before.backfilled,
    )
    p = outcome.problems
    if outcome.ghosts:
        p.append(f"{outcome.ghosts} ghost(s) left")
    if outcome.duplicates:
        p.append(f"{outcome.duplicates} duplicate profile id(s)")
    if outcome.orphans:
        p.append(f"{outcome.orphans} orphan profile(s)")
    if outcome.sync_failures:
        p.append(f"{outcome.sync_failures} failed profile write(s) in ghostsync.sync_failures")
    if outcome.missing_profiles:
        p.append(f"{outcome.missing_profiles} successful signup(s) without a profile")
    if outcome.failed_signups_kept:
        p.append(f"{outcome.failed_signups_kept} failed signup(s) left an auth user behind")
    for run_id, status, records, started, finished, _details in runs:
        if status == "running":
            p.append(f"audit run {run_id} still 'running'")
        elif status not in statuses:
            p.append(f"audit run {run_id} ended {status!r}")
        if finished is None or finished < started:
            p.append(f"audit run {run_id} has finished_at {finished} (started {started})")
        if records < 0:
            p.append(f"audit run {run_id} has records_affected {records}")
    if outcome.records_affected != outcome.backfilled:
        p.append(f"audit records_affected add up to {outcome.records_affected}, "
                 f"but the backfill created {outcome.backfilled} profile(s)")
    return outcome


# -- the deploy pipeline's commands ------------------------------------------------

def ghostsync_argv(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "ghostsync"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "ghostsync.cli"]
    return [*base, *args]


def alembic_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), *args]


def env_for(url: str) -> dict[str, str]:
    return dict(os.environ, DATABASE_URL=url)


def run(argv: list[str], url: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, env=env_for(url), capture_output=True, text=True, timeout=timeout)


def spawn(argv: list[str], url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=REPO, env=env_for(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def reap(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """Collect a child's output; kill it first if it is still running after ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        return proc.communicate(timeout=30)


def wait_until(predicate: Any, timeout: float, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def running_run(db: SupabaseDatabase, after_id: int, min_batches: int) -> tuple[Any, ...] | None:
    """The newest backfill run after ``after_id`` while it is 'running' with at least ``min_batches`` batches."""
    if db.value("SELECT to_regclass('public.cleanup_audit_log')") is None:
        return None
    rows = db.sql(
        "SELECT id, status, records_affected, details FROM public.cleanup_audit_log "
        "WHERE job_name = %s AND id > %s ORDER BY id DESC LIMIT 1", (JOB, after_id))
    if rows and rows[0][1] == "running" and int(rows[0][3].get("batches", 0)) >= min_batches:
        return rows[0]
    return None


def server_log_size(db: SupabaseDatabase) -> int:
    path = db.server.logfile
    return path.stat().st_size if path.exists() else 0


def lock_timeouts_since(db: SupabaseDatabase, offset: int) -> int:
    """How many statements the server cancelled for lock_timeout since ``offset`` of its log."""
    path = db.server.logfile
    if not path.exists():
        return 0
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").count("canceling statement due to lock timeout")


# -- load phases ------------------------------------------------------------------------

@dataclass
class Phase:
    report: LoadReport
    began: float
    ended: float
    result: Any

    @property
    def seconds(self) -> float:
        return self.ended - self.began


def under_load(scale: reliability.Scale, dsn: str, action: Callable[[], Any],
               *, lead_s: float = 0.3, tail_s: float = 0.3) -> Phase:
    """Run ``action`` while ``scale.clients`` clients sign users up through ``dsn``."""
    load = SignupLoad(dsn, clients=scale.clients, max_signups=scale.max_signups, deadline_s=scale.deadline_s)
    load.start()
    try:
        load.wait(lead_s)
        began = time.monotonic()
        result = action()
        ended = time.monotonic()
        load.wait(tail_s)
    finally:
        report = load.stop()
    return Phase(report, began, ended, result)


def lock_args(scale: reliability.Scale, retries: int = 10) -> list[str]:
    return ["-x", f"lock_timeout={scale.lock_timeout_ms}ms", "-x", f"lock_retries={retries}",
            "-x", f"batch_size={scale.batch_size}"]


def stall_bound_s(scale: reliability.Scale) -> float:
    return (scale.lock_timeout_ms + scale.stall_margin_ms) / 1000


def figures(db: Any, label: str, phase: Phase, outcome: Outcome | None, extra: str = "") -> str:
    line = (f"pg{db.owner.major} {label}: {phase.seconds:.1f} s; {phase.report.summary()}"
            + (f"; {outcome.line()}" if outcome else "") + (f"; {extra}" if extra else ""))
    reliability.record(line)
    return line


def assert_signups_unharmed(phase: Phase, scale: reliability.Scale) -> None:
    report = phase.report
    assert report.failed == 0, f"{report.failed} signup(s) failed: {dict(report.errors)}"
    assert report.in_window(phase.began, phase.ended) > 0, "no signup ran while the command ran"
    assert report.signups[-1].started >= phase.ended, "the load stopped before the command ended: raise max_signups"
    assert report.longest_stall_s() <= stall_bound_s(scale), (
        f"a signup stalled {report.longest_stall_s() * 1000:.0f} ms; lock_timeout is {scale.lock_timeout_ms} ms "
        f"(+{scale.stall_margin_ms} ms margin)")


@contextmanager
def released_after(conn: Any, seconds: float) -> Iterator[Callable[[], None]]:
    """Yields ``start()``: from that moment ``conn`` rolls back after ``seconds``. Closes ``conn`` on exit."""
    release = threading.Timer(seconds, conn.rollback)
    try:
        yield release.start
    finally:
        release.cancel()
        if release.is_alive():
            release.join()
        conn.close()


def hold_auth_users_lock(db: Any) -> Any:
    """A long transaction as the auth service: it updated a row of auth.users and has not committed.
    Signups go on beside it; DDL on auth.users has to wait for it."""
    conn = psycopg2.connect(db.url(AUTH_ROLE))
    with conn.cursor() as cur:
        cur.execute("UPDATE users SET updated_at = now() WHERE id = (SELECT id FROM users ORDER BY id LIMIT 1)")
    return conn
