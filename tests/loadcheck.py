"""Seeding and checks of the reliability tests: many users set-based, and what "no harm done" means.

Seeding is set-based (INSERT ... SELECT generate_series): the app's own
``public.users`` with a profile for every existing member, and ghosts
without one. Before ghostsync is installed ghosts are written as the auth
service's role; once its trigger exists, ghosts are written the way they
appear in real life after a dump and restore: as the superuser with
``session_replication_role = replica``, so no trigger fires.

Provenance: a test-owned trigger on ``public.users`` records, for every
profile written, whether the transaction that wrote it also wrote its auth
user's row (``auth.users.xmin`` at that moment is the writing transaction): a
profile written by the signup trigger (or the update sync) does; one written
by the backfill does not. Evaluated when the profile is written, so a later
sign-in that updates the auth row does not change the verdict. So the number
of profiles the backfill created is known exactly, and the audit log's
``records_affected`` must add up to it.
"""

from __future__ import annotations

import itertools
import os
import re
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

from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.testing.fixtures import SupabaseDatabase
from ghostsync.testing.loadgen import AuthLoad, LoadReport, SignupLoad
from ghostsync.testing.supabase import APP_PROFILES_SQL
from tests import reliability
from tests.paths import REPO
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
CREATE TABLE IF NOT EXISTS loadtest.profile_origin (
  id uuid NOT NULL, top_xid bigint NOT NULL, with_auth_row boolean NOT NULL
);
CREATE OR REPLACE FUNCTION loadtest.record_profile_origin() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $f$
DECLARE
  me bigint := pg_catalog.pg_current_xact_id()::text::bigint % 4294967296;
BEGIN
  INSERT INTO loadtest.profile_origin (id, top_xid, with_auth_row)
  VALUES (NEW.id, me, EXISTS (SELECT 1 FROM auth.users AS u
                              WHERE u.id = NEW.id AND u.xmin::text::bigint = me));
  RETURN NULL;
END
$f$;
CREATE TRIGGER zz_loadtest_profile_origin AFTER INSERT ON public.users
  FOR EACH ROW EXECUTE FUNCTION loadtest.record_profile_origin();
"""

BACKFILLED = """
SELECT count(*) FROM loadtest.profile_origin AS o JOIN auth.users AS u ON u.id = o.id
WHERE NOT o.with_auth_row
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


def env_for(url: str, *, defaults: bool = False) -> dict[str, str]:
    """The environment of a command run against ``url``; ``defaults``: without any GHOSTSYNC_* setting,
    so every setting is ghostsync's default."""
    env = {k: v for k, v in os.environ.items() if not (defaults and k.startswith("GHOSTSYNC_"))}
    return dict(env, DATABASE_URL=url)


def run(argv: list[str], url: str, timeout: float = 600, *, defaults: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, env=env_for(url, defaults=defaults), capture_output=True, text=True,
                          timeout=timeout)


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
    """How many statements the server cancelled for their lock budget since ``offset`` of its log: a
    locking step runs with lock_timeout = budget / locks and statement_timeout = budget, so either
    cancels an attempt that waited too long."""
    path = db.server.logfile
    if not path.exists():
        return 0
    with path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return (text.count("canceling statement due to lock timeout")
            + text.count("canceling statement due to statement timeout"))


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
               *, lead_s: float = 0.3, tail_s: float = 0.3, mixed: bool = True) -> Phase:
    """Run ``action`` while ``scale.clients`` clients of the auth service work through ``dsn``: signups,
    sign-ins and token refreshes, 2:1:1, as ``AuthLoad`` makes them (``mixed=False``: signups only)."""
    load: SignupLoad
    if mixed:
        load = AuthLoad(dsn, signups=2, sign_ins=1, refreshes=1, clients=scale.clients,
                        max_requests=scale.max_signups, deadline_s=scale.deadline_s)
    else:
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


def lock_args(scale: reliability.Scale, retries: int | None = None) -> list[str]:
    """The migration's -x arguments under load: ghostsync's default lock budget (no lock_timeout),
    the scale's batch size, and ``lock_retries`` only where a test needs it to give up sooner."""
    return ["-x", f"batch_size={scale.batch_size}"] + (["-x", f"lock_retries={retries}"] if retries else [])


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
        f"a request stalled {report.longest_stall_s() * 1000:.0f} ms; the default lock budget is "
        f"{scale.lock_timeout_ms} ms (+{scale.stall_margin_ms} ms margin)")


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


def hold_auth_sessions_lock(db: Any) -> Any:
    """A long transaction as the auth service: a token refresh that updated a session and has not
    committed (ROW EXCLUSIVE on auth.sessions only). A DROP TRIGGER through supautils locks
    auth.users first and waits for auth.sessions last, holding the others meanwhile."""
    with AuthService(db.url(AUTH_ROLE)) as auth:
        user = auth.signup_email(f"holder-{uuid.uuid4().hex[:8]}@example.com", autoconfirm=True, session=False)
        session = auth.sign_in(user)
    conn = psycopg2.connect(db.url(AUTH_ROLE))
    with conn.cursor() as cur:
        cur.execute("UPDATE sessions SET refreshed_at = now() WHERE id = %s", (str(session.id),))
    return conn


# -- lock waits, measured by the server ------------------------------------------------------------

@dataclass
class LockWait:
    """One wait of one backend for one lock, as pg_locks showed it.

    ``waited_s``: from ``pg_locks.waitstart`` (set by the server when the wait began) to the last
    sample that still saw it waiting: a lower bound. ``bound_s``: to the first sample that no longer
    saw it: an upper bound. The true wait lies between the two; they differ by one sampling gap."""

    pid: int
    target: str
    mode: str
    role: str
    application: str
    waitstart: float
    last_seen: float
    gone_by: float | None = None

    @property
    def waited_s(self) -> float:
        return max(0.0, self.last_seen - self.waitstart)

    @property
    def bound_s(self) -> float:
        return max(0.0, (self.gone_by if self.gone_by is not None else self.last_seen) - self.waitstart)


LOCK_WAITS_SQL = """
SELECT l.pid, CASE WHEN l.locktype = 'relation' THEN l.relation::regclass::text ELSE l.locktype END,
       l.mode, a.usename::text, a.application_name,
       extract(epoch FROM coalesce(l.waitstart, clock_timestamp())), extract(epoch FROM clock_timestamp())
FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = current_database()
"""


class LockWaitSampler:
    """Samples pg_locks of one database every ``interval_s`` in a thread, recording every lock wait
    (``LockWait``) of every backend. Bounded: it stops at ``stop()`` or after ``max_s`` seconds.

        with LockWaitSampler(db.url("supabase_admin")) as sampler:
            ... run the deploy under load ...
        sampler.waits_of("supabase_auth_admin")
    """

    def __init__(self, dsn: str, *, interval_s: float = 0.01, max_s: float = 900.0) -> None:
        self.dsn = dsn
        self.interval_s = interval_s
        self.max_s = max_s
        self.waits: dict[tuple[int, str, str, float], LockWait] = {}
        self.samples = 0
        self.longest_gap_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-wait-sampler", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> LockWaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"the lock-wait sampler failed: {self._error}") from self._error

    def _run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn)
            conn.autocommit = True
        except psycopg2.Error as exc:
            self._error = exc
            return
        began = time.monotonic()
        open_keys: set[tuple[int, str, str, float]] = set()
        previous = None
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set() and time.monotonic() - began < self.max_s:
                    cur.execute(LOCK_WAITS_SQL)
                    rows = cur.fetchall()
                    now = time.time()
                    seen = set()
                    for pid, target, mode, role, app, waitstart, at in rows:
                        key = (int(pid), str(target), str(mode), round(float(waitstart), 6))
                        seen.add(key)
                        wait = self.waits.get(key)
                        if wait is None:
                            self.waits[key] = LockWait(int(pid), str(target), str(mode), str(role), str(app or ""),
                                                       float(waitstart), float(at))
                        else:
                            wait.last_seen = float(at)
                    sampled_at = float(rows[0][6]) if rows else now
                    for key in open_keys - seen:
                        self.waits[key].gone_by = sampled_at
                    open_keys = seen
                    if previous is not None:
                        self.longest_gap_s = max(self.longest_gap_s, now - previous)
                    previous = now
                    self.samples += 1
                    self._stop.wait(self.interval_s)
        except psycopg2.Error as exc:
            self._error = exc
        finally:
            conn.close()

    def waits_of(self, role: str, *, exclude_pids: tuple[int, ...] = ()) -> list[LockWait]:
        """The waits of backends logged in as ``role`` (the load: the auth service's role), longest first."""
        found = [w for w in self.waits.values() if w.role == role and w.pid not in exclude_pids]
        return sorted(found, key=lambda w: w.waited_s, reverse=True)

    def waits_of_application(self, application: str) -> list[LockWait]:
        return sorted((w for w in self.waits.values() if w.application == application),
                      key=lambda w: w.waited_s, reverse=True)


STEP_LOG = re.compile(r"ghostsync: (?P<what>.+?): (?P<outcome>locks taken on attempt|gave up after) "
                      r"(?P<attempts>\d+) \((?P<ms>\d+) ms in all\)")


@dataclass(frozen=True)
class StepLine:
    what: str
    attempts: int
    ms: int
    gave_up: bool


def step_lines(log: str) -> list[StepLine]:
    """The lines the migration logs for each locking step: how many lock attempts it needed."""
    return [StepLine(m["what"], int(m["attempts"]), int(m["ms"]), m["outcome"] == "gave up after")
            for m in STEP_LOG.finditer(log)]


LOGGED_WAIT = re.compile(r"process (?P<pid>\d+) (?P<event>still waiting for|acquired) (?P<mode>\w+) on "
                         r"(?P<target>relation (?P<rel>\d+) of database \d+|.+?) after (?P<ms>[\d.]+) ms")


@dataclass(frozen=True)
class LoggedWait:
    """A lock wait as the server itself measured it (log_lock_waits): from the moment the backend
    began to wait to the moment it got the lock, to the microsecond."""

    pid: int
    mode: str
    target: str
    ms: float


class LockWaitLog:
    """The lock waits of ``role``'s sessions in ``db``, exact, from the server's log.

    Sets ``log_lock_waits = on`` and ``deadlock_timeout = threshold_ms`` for ``role`` in this
    database only (``ALTER ROLE ... IN DATABASE``; sessions opened afterwards take it): every wait
    longer than ``threshold_ms`` is then logged twice, "still waiting ... after N ms" and, when
    the backend gets the lock, "acquired ... after N ms". ``waits()`` reads the log written since
    this object was made; ``unfinished()`` the waits that were logged but never ended with the lock
    (a request cancelled or still waiting).

    ``deadlock_timeout`` is also when a waiting backend looks for a deadlock, and the one that finds
    it is cancelled. A DROP TRIGGER through supautils locks auth.users, then auth.audit_log_entries,
    while a sign-in holds audit_log_entries and wants users: a cycle, which ghostsync's per-lock
    lock_timeout (80 ms there) must end before the request's deadlock check does. So the threshold
    stays well above twice that (200 ms; PostgreSQL's default is 1 s): lowering it would make the
    instrument, not ghostsync, cancel requests."""

    def __init__(self, db: Any, role: str = AUTH_ROLE, threshold_ms: int = 200) -> None:
        self.db = db
        self.role = role
        self.threshold_ms = threshold_ms
        db.sql(f'ALTER ROLE "{role}" IN DATABASE "{db.name}" SET log_lock_waits = on')
        db.sql(f'ALTER ROLE "{role}" IN DATABASE "{db.name}" SET deadlock_timeout = \'{threshold_ms}ms\'')
        self.offset = server_log_size(db)

    def _events(self) -> list[tuple[str, LoggedWait]]:
        path = self.db.server.logfile
        with path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        names: dict[str, str] = {}
        events = []
        for match in LOGGED_WAIT.finditer(text):
            target = match["target"]
            if match["rel"]:
                rel = match["rel"]
                if rel not in names:
                    names[rel] = str(self.db.value("SELECT %s::oid::regclass::text", (int(rel),)))
                target = names[rel]
            events.append((match["event"], LoggedWait(int(match["pid"]), match["mode"], target, float(match["ms"]))))
        return events

    def waits(self) -> list[LoggedWait]:
        """Every wait that ended with the lock, longest first."""
        return sorted((w for event, w in self._events() if event == "acquired"), key=lambda w: w.ms, reverse=True)

    def unfinished(self) -> list[LoggedWait]:
        events = self._events()
        done = {(w.pid, w.mode, w.target) for event, w in events if event == "acquired"}
        return [w for event, w in events if event != "acquired" and (w.pid, w.mode, w.target) not in done]


@contextmanager
def released_when_blocked(db: Any, conn: Any, *, waits: int = 2, role: str = "postgres",
                          max_s: float = 30.0) -> Iterator[Callable[[], None]]:
    """Yields ``start()``: from that moment ``conn`` (a long transaction) rolls back as soon as
    ``role``'s sessions (the migration's) have been seen waiting for a lock ``waits`` times, i.e.
    after that many of its attempts, or after ``max_s`` at the latest. Deterministic where a timer is
    not: the deploy waits behind the transaction whatever the machine's speed. Closes ``conn``."""
    sampler = LockWaitSampler(db.url("supabase_admin"))
    done = threading.Event()

    def release() -> None:
        wait_until(lambda: done.is_set() or len(sampler.waits_of(role)) >= waits, max_s, 0.01)
        conn.rollback()

    thread = threading.Thread(target=release, name="release-when-blocked", daemon=True)
    with sampler:
        try:
            yield thread.start
        finally:
            done.set()
            if thread.ident is not None:
                thread.join(timeout=max_s + 5)
            conn.close()
