"""Faults in the middle of a deploy: the backfill SIGKILLed, PostgreSQL stopped, the connection dropped.

After each fault the same command, run again, completes: no ghost, no
duplicate profile, and the audit log shows the interrupted run and the
completed one, whose records_affected add up to the profiles the backfill
created (tests/loadcheck.py).
"""

from __future__ import annotations

import re
import signal
import time

import psycopg2

from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.fixtures import start_supabase_server, supabase_database
from ghostsync.testing.loadgen import SignupLoad
from tests import reliability
from tests.loadcheck import (
    alembic_argv,
    ghostsync_argv,
    reap,
    run,
    running_run,
    seed_auth_users,
    seed_existing,
    snapshot,
    spawn,
    verify,
    wait_until,
)
from tests.seeding import ghost_count, head_revision

HEAD = head_revision()
CONNECTION_LOST = {"57P01", "57P02", "57P03", "08000", "08003", "08006", None}


def installed_with_restored_ghosts(db, scale) -> None:
    """ghostsync at head, then ``fault_ghosts`` auth users restored without their profiles."""
    seed_existing(db, 1000, 0)
    proc = run(alembic_argv("upgrade", "head"), db.url())
    assert proc.returncode == 0, proc.stderr
    seed_auth_users(db, scale.fault_ghosts, "restored", bypass_triggers=True)
    db.sql("ANALYZE auth.users")
    assert ghost_count(db) == scale.fault_ghosts


def backend_gone(db, pid: int) -> bool:
    return not db.value("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))


def last_error(stderr: str) -> str:
    """The exception line of a traceback, or the last line."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(" ")]
    errors = [line for line in lines if line.startswith(("sqlalchemy.exc.", "psycopg2.", "FAILED"))]
    return (errors or lines or [""])[0][:200]


def walked(stdout: str) -> int:
    match = re.search(r"walked (\d+) auth user", stdout)
    assert match, stdout
    return int(match.group(1))


def test_backfill_killed_with_sigkill_then_run_again(db, scale):
    installed_with_restored_ghosts(db, scale)
    before = snapshot(db)
    total = int(db.value("SELECT count(*) FROM auth.users"))
    proc = spawn(ghostsync_argv("backfill", "--batch-size", str(scale.fault_batch_size)), db.url())
    try:
        at_kill = wait_until(lambda: running_run(db, before.audit_id, 3) or proc.poll() is not None, timeout=120)
        proc.send_signal(signal.SIGKILL)
    finally:
        out, err = reap(proc)
    assert proc.returncode == -signal.SIGKILL, f"the backfill ended before it could be killed: {out} {err}"
    assert isinstance(at_kill, tuple), "the backfill never showed progress"
    run_id, _status, _repaired, details = at_kill
    # the killed client's backend finishes the statement in flight, then notices and exits
    assert wait_until(lambda: backend_gone(db, int(details["pid"])), timeout=60, interval=0.05)
    left_after_kill = ghost_count(db)
    assert 0 < left_after_kill < scale.fault_ghosts, "killed mid-run: some ghosts repaired, some left"
    assert db.value("SELECT status FROM public.cleanup_audit_log WHERE id = %s", (run_id,)) == "running"

    again = run(ghostsync_argv("backfill", "--batch-size", str(scale.fault_batch_size)), db.url())
    assert again.returncode == 0, again.stderr
    outcome = verify(db, before, statuses=("interrupted", "succeeded"))
    reliability.record(
        f"pg{db.owner.major} backfill SIGKILLed after {details['batches']} batch(es) "
        f"({scale.fault_ghosts - left_after_kill} of {scale.fault_ghosts} ghosts repaired), run again: "
        f"{again.stdout.strip()}; {again.stderr.strip()}; {outcome.line()}")
    assert not outcome.problems, outcome.problems
    assert outcome.statuses == ["interrupted", "succeeded"]
    assert outcome.records_affected == scale.fault_ghosts
    assert "resuming after" in again.stderr
    assert walked(again.stdout) < total, "the second run resumed instead of walking every auth user again"


def test_connection_dropped_mid_batch_then_run_again(db, scale):
    installed_with_restored_ghosts(db, scale)
    before = snapshot(db)
    total = int(db.value("SELECT count(*) FROM auth.users"))
    # a ghost in the middle of the walk, locked FOR UPDATE: the batch that writes its profile waits
    # there (the profile's foreign key check needs a share lock on it; a member's row would not stop it)
    middle = db.value(
        "SELECT u.id FROM auth.users u WHERE NOT EXISTS (SELECT 1 FROM public.users p WHERE p.id = u.id) "
        "ORDER BY u.id OFFSET %s LIMIT 1", (scale.fault_ghosts // 2,))
    blocker = psycopg2.connect(db.url("supabase_admin"))
    proc = None
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT 1 FROM auth.users WHERE id = %s FOR UPDATE", (middle,))
        proc = spawn(ghostsync_argv("backfill", "--batch-size", str(scale.fault_batch_size)), db.url())
        waiting = wait_until(lambda: db.value(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'ghostsync-backfill' "
            "AND wait_event_type = 'Lock'") or proc.poll() is not None, timeout=120, interval=0.05)
        assert waiting is not True and waiting, "the backfill never reached the locked row"
        assert db.value("SELECT pg_terminate_backend(%s, 10000)", (waiting,)) is True
    finally:
        blocker.rollback()
        blocker.close()
        if proc is not None:
            out, err = reap(proc, timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    ghosts_left = ghost_count(db)
    again = run(ghostsync_argv("backfill", "--batch-size", str(scale.fault_batch_size)), db.url())
    outcome = verify(db, before, statuses=("interrupted", "succeeded"))
    reliability.record(
        f"pg{db.owner.major} connection dropped mid-batch: exit {proc.returncode}, {err.strip()!r}; "
        f"{ghosts_left} ghosts left; run again: {again.stdout.strip()}; {again.stderr.strip()}; {outcome.line()}")
    assert proc.returncode == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("ghostsync: "), err
    assert "Traceback" not in err
    assert 0 < ghosts_left < scale.fault_ghosts
    assert again.returncode == 0, again.stderr
    assert "resuming after" in again.stderr
    assert walked(again.stdout) < total, "the second run resumed instead of walking every auth user again"
    assert not outcome.problems, outcome.problems
    assert outcome.statuses == ["interrupted", "succeeded"]
    assert outcome.records_affected == scale.fault_ghosts


def test_postgres_stopped_in_the_middle_of_upgrade_head(pg, scale):
    """Fast shutdown while `alembic upgrade head` backfills, on a server of this test's own;
    signups go on (through the outage) and only fail while the server is down."""
    supa = start_supabase_server(pg.major)
    try:
        with supabase_database(supa) as db:
            seed_existing(db, 1000, scale.fault_ghosts)
            before = snapshot(db)
            load = SignupLoad(db.url(AUTH_ROLE), clients=2, max_signups=scale.max_signups,
                              deadline_s=scale.deadline_s)
            load.start()
            try:
                proc = spawn(alembic_argv("-x", f"batch_size={scale.fault_batch_size}", "upgrade", "head"),
                             db.url())
                try:
                    at_stop = wait_until(lambda: running_run(db, before.audit_id, 3) or proc.poll() is not None,
                                         timeout=120)
                    supa.server.stop_fast()
                    _out, err = reap(proc, timeout=60)
                finally:
                    if proc.poll() is None:
                        reap(proc, timeout=0.1)
                supa.server.start_again()
                back_up = time.monotonic()
                version_after_crash = db.value("SELECT version_num FROM public.alembic_version")
                again = run(alembic_argv("-x", f"batch_size={scale.fault_batch_size}", "upgrade", "head"),
                            db.url())
                load.wait(0.5)
            finally:
                report = load.stop()
            outcome = verify(db, before, report, statuses=("interrupted", "succeeded"))
            outage_failures = [s for s in report.signups if not s.ok]
            reliability.record(
                f"pg{pg.major} PostgreSQL fast shutdown during upgrade head (backfill at batch "
                f"{at_stop[3]['batches'] if isinstance(at_stop, tuple) else '?'}), started again: upgrade exit "
                f"{proc.returncode} ({last_error(err)}), left at {version_after_crash}; "
                f"upgrade head again exit {again.returncode}; "
                f"{report.summary()}; {outcome.line()}")
            assert isinstance(at_stop, tuple), f"the upgrade ended before the server could be stopped: {err}"
            assert proc.returncode != 0
            assert version_after_crash != HEAD
            assert again.returncode == 0, again.stderr
            assert db.value("SELECT version_num FROM public.alembic_version") == HEAD
            assert not outcome.problems, outcome.problems
            assert outcome.statuses == ["interrupted", "succeeded"]
            # signups failed only because the server was down: lost connections, before it was back
            assert all(s.sqlstate in CONNECTION_LOST and s.started <= back_up for s in outage_failures), \
                report.summary()
            assert any(s.ok and s.started > back_up for s in report.signups), "signups resumed after the restart"
    finally:
        supa.server.stop()
