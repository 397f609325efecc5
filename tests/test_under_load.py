"""Signups, sign-ins and token refreshes keep working while ghostsync is installed, backfilled, rolled
back and re-installed.

The auth service's load (``AuthLoad``: several clients as ``supabase_auth_admin``,
signups, sign-ins and token refreshes 2:1:1, each the auth service's own
transaction) runs while the deploy pipeline's commands run, with ghostsync's
default lock budget (no -x lock_timeout), against a database with many existing
users and ghosts. After each phase: no request failed, no request stalled
longer than the default lock budget (plus a margin for a busy machine; the exact
per-attempt bound is tests/test_lock_budget.py's), no ghost and no duplicate
profile is left, and the audit log's runs are closed and add up to the profiles
the backfill created (tests/loadcheck.py). The figures are printed in the
terminal summary and kept in docs/RELIABILITY.md.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from ghostsync.testing.authservice import AUTH_ROLE
from tests.loadcheck import (
    alembic_argv,
    assert_signups_unharmed,
    figures,
    ghostsync_argv,
    hold_auth_users_lock,
    lock_args,
    lock_timeouts_since,
    released_after,
    released_when_blocked,
    run,
    seed_auth_users,
    seed_existing,
    server_log_size,
    snapshot,
    stall_bound_s,
    under_load,
    verify,
)
from tests.seeding import ghost_count, head_revision

HEAD = head_revision()


def test_upgrade_head_under_load(db, scale):
    seed_existing(db, scale.members, scale.ghosts)
    before = snapshot(db)
    phase = under_load(scale, db.url(AUTH_ROLE),
                       lambda: run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url()))
    proc = phase.result
    assert proc.returncode == 0, proc.stderr
    outcome = verify(db, before, phase.report)
    print(figures(db, "alembic upgrade head", phase, outcome))
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    assert db.value("SELECT version_num FROM public.alembic_version") == HEAD
    # the seeded ghosts, and the signups made before the trigger existed
    assert outcome.records_affected >= scale.ghosts


def test_backfill_under_load(db, scale):
    seed_existing(db, scale.members, 0)
    proc = run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url())
    assert proc.returncode == 0, proc.stderr
    seed_auth_users(db, scale.ghosts, "restored", bypass_triggers=True)
    assert ghost_count(db) == scale.ghosts
    before = snapshot(db)
    phase = under_load(scale, db.url(AUTH_ROLE),
                       lambda: run(ghostsync_argv("backfill", "--batch-size", str(scale.batch_size)), db.url()))
    proc = phase.result
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"backfill succeeded: repaired {scale.ghosts} ghost user(s)"), proc.stdout
    outcome = verify(db, before, phase.report)
    print(figures(db, "ghostsync backfill", phase, outcome, proc.stdout.strip().split(", ")[-1]))
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    assert outcome.records_affected == scale.ghosts


def test_downgrade_base_then_upgrade_head_under_load(db, scale):
    seed_existing(db, scale.members, scale.ghosts)
    proc = run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url())
    assert proc.returncode == 0, proc.stderr
    before = snapshot(db)
    between: dict[str, Any] = {}

    def roll_back_and_reinstall() -> tuple[Any, Any]:
        down = run(alembic_argv(*lock_args(scale), "downgrade", "base"), db.url())
        between["triggers"] = db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                                       "AND NOT tgisinternal")
        between["version"] = db.value("SELECT count(*) FROM public.alembic_version")
        up = run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url())
        return down, up

    phase = under_load(scale, db.url(AUTH_ROLE), roll_back_and_reinstall)
    down, up = phase.result
    assert down.returncode == 0, down.stderr
    assert up.returncode == 0, up.stderr
    assert between == {"triggers": 0, "version": 0}, "downgrade base removed every trigger and the version"
    outcome = verify(db, before, phase.report)
    print(figures(db, "alembic downgrade base + upgrade head", phase, outcome))
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    assert db.value("SELECT version_num FROM public.alembic_version") == HEAD


def test_upgrade_waits_behind_a_long_transaction_then_succeeds(db, scale):
    seed_existing(db, scale.members, scale.ghosts)
    before = snapshot(db)
    log_offset = server_log_size(db)
    with released_when_blocked(db, hold_auth_users_lock(db)) as start_clock:

        def upgrade_while_blocked() -> Any:
            start_clock()
            return run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url())

        phase = under_load(scale, db.url(AUTH_ROLE), upgrade_while_blocked)
    proc = phase.result
    assert proc.returncode == 0, proc.stderr
    timeouts = lock_timeouts_since(db, log_offset)
    outcome = verify(db, before, phase.report)
    held = phase.report.in_window(phase.began, phase.began + timeouts * scale.lock_timeout_ms / 1000)
    print(figures(db, "upgrade head behind a long transaction (ended after two cancelled attempts)", phase, outcome,
                  f"the default lock budget ({scale.lock_timeout_ms} ms) cancelled {timeouts} attempt(s), then it "
                  "succeeded; "
                  f"{held} signup(s) while the lock was held"))
    assert timeouts >= 1, "the upgrade never waited for the lock: the long transaction did not block it"
    assert held > 0
    assert "locks taken on attempt" in proc.stderr, "the log says on which attempt each step got its locks"
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    assert db.value("SELECT version_num FROM public.alembic_version") == HEAD


def test_an_unguarded_lock_would_be_caught(db, scale):
    """Control: the same long transaction, and a lock taken without lock_timeout. Signups stall for as
    long as the transaction runs, so the bound the tests above assert does detect an unguarded step."""
    seed_existing(db, 1000, 0)
    with released_after(hold_auth_users_lock(db), scale.hold_s) as start_clock:

        def unguarded_lock() -> None:
            start_clock()
            conn = psycopg2.connect(db.url("supabase_admin"))
            try:
                with conn.cursor() as cur:
                    cur.execute("LOCK TABLE auth.users IN SHARE ROW EXCLUSIVE MODE")
                conn.commit()
            finally:
                conn.close()

        phase = under_load(scale, db.url(AUTH_ROLE), unguarded_lock)
    print(figures(db, "control: an unguarded LOCK TABLE behind the same transaction", phase, None))
    assert phase.report.failed == 0
    assert phase.report.longest_stall_s() > stall_bound_s(scale), (
        "signups queued behind an unguarded lock did not exceed the bound: the stall measurement is blind")


def test_upgrade_gives_up_cleanly_behind_a_long_transaction(db, scale):
    seed_existing(db, scale.members, scale.ghosts)
    before = snapshot(db)
    log_offset = server_log_size(db)
    blocker = hold_auth_users_lock(db)
    try:
        phase = under_load(scale, db.url(AUTH_ROLE),
                           lambda: run(alembic_argv(*lock_args(scale, retries=2), "upgrade", "head"), db.url()))
        # what the failed deploy left, while the long transaction still runs
        left = {
            "trigger": db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                                "AND NOT tgisinternal"),
            "function": db.value("SELECT to_regprocedure('ghostsync.handle_new_user()') IS NOT NULL"),
            "version": db.value("SELECT version_num FROM public.alembic_version"),
        }
    finally:
        blocker.rollback()
        blocker.close()
    proc = phase.result
    out = proc.stdout + proc.stderr
    failed_lines = [line for line in out.splitlines() if "FAILED" in line]
    timeouts = lock_timeouts_since(db, log_offset)
    print(figures(db, "upgrade head behind a transaction that never ends (lock_retries=2)", phase, None,
                  f"gave up after {timeouts} lock timeout(s): {failed_lines[0] if failed_lines else out[-200:]!r}; "
                  f"left at revision {left['version']}"))
    assert proc.returncode != 0
    assert len(failed_lines) == 1 and failed_lines[0].startswith("FAILED: ghostsync: gave up on "), out
    assert "3 attempts" in failed_lines[0] and "nothing of this revision was applied" in failed_lines[0]
    assert "gave up after 3" in out, "the log says how many attempts the step made"
    assert "Traceback" not in out
    assert timeouts == 3
    assert left["trigger"] == 0 and left["function"] is False, "the revision that gave up applied nothing"
    assert left["version"] == "ghostsync_0001", left
    assert left["version"] != HEAD
    assert_signups_unharmed(phase, scale)

    # the long transaction is over: the same deploy, again, under load
    phase = under_load(scale, db.url(AUTH_ROLE),
                       lambda: run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url()))
    proc = phase.result
    assert proc.returncode == 0, proc.stderr
    outcome = verify(db, before, phase.report)
    print(figures(db, "upgrade head again once the transaction ended", phase, outcome))
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems


def test_reinstall_behind_a_transaction_reading_the_audit_log(db, scale):
    """Re-install (upgrade head after downgrade base) while a transaction that read
    public.cleanup_audit_log stays open (an operator's session, a report, a backup). The
    upgrade must wait politely and retry, or give up saying why in one line.

    Regression: ghostsync_0001 used to run CREATE_OR_ADOPT_AUDIT_LOG unguarded; its ALTER TABLE
    public.cleanup_audit_log ENABLE ROW LEVEL SECURITY (ACCESS EXCLUSIVE) then failed at the first
    lock_timeout (left set by the guarded step before it: SET LOCAL survives RELEASE SAVEPOINT)
    with a traceback and no retry. (The audit log keeps its table across a downgrade, so the
    re-install adopts it and its step locks nothing requests use: it runs under the plain budget.)"""
    seed_existing(db, scale.members, scale.ghosts)
    assert run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url()).returncode == 0
    assert run(alembic_argv(*lock_args(scale), "downgrade", "base"), db.url()).returncode == 0
    before = snapshot(db)
    reader = psycopg2.connect(db.url("postgres"))
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM public.cleanup_audit_log")
    with released_after(reader, scale.hold_s) as start_clock:

        def reinstall_while_read() -> Any:
            start_clock()
            return run(alembic_argv(*lock_args(scale, retries=10), "upgrade", "head"), db.url())

        phase = under_load(scale, db.url(AUTH_ROLE), reinstall_while_read)
    proc = phase.result
    out = proc.stdout + proc.stderr
    failed_lines = [line for line in out.splitlines() if "FAILED" in line]
    said = "succeeded" if proc.returncode == 0 else (
        failed_lines[0] if failed_lines and "Traceback" not in out
        else "failed with a traceback: " + next(
            (line for line in out.splitlines() if line.startswith("sqlalchemy.exc.")), out.strip()[-200:]))
    figures(db, f"re-install behind a {scale.hold_s:.0f} s transaction that read the audit log", phase, None, said)
    assert_signups_unharmed(phase, scale)
    assert proc.returncode == 0 or (len(failed_lines) == 1 and "Traceback" not in out), (
        "the upgrade neither waited for the audit log's lock nor said why it gave up in one line:\n"
        + "\n".join(line for line in out.splitlines() if line.strip() and not line.startswith(" "))[-2500:])
    if proc.returncode != 0:
        assert run(alembic_argv(*lock_args(scale), "upgrade", "head"), db.url()).returncode == 0
    outcome = verify(db, before, phase.report)
    assert not outcome.problems, outcome.problems
