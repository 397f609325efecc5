"""Through PgBouncer in transaction mode (Supabase's port 6543): upgrade, backfill, status, downgrade.

Debian's pgbouncer runs on 127.0.0.1 in front of the test server
(``ThrowawayPgBouncer``). Every command of the deploy pipeline, and the signup
load, go through it. Where this machine has no pgbouncer these tests are
deselected and the summary says ``PgBouncer: NOT AVAILABLE`` (tests/reliability.py).
"""

from __future__ import annotations

import json
import re
import signal
import time

import psycopg2
import pytest

from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.pgbouncer import ThrowawayPgBouncer
from tests import reliability
from tests.loadcheck import (
    alembic_argv,
    assert_signups_unharmed,
    figures,
    ghostsync_argv,
    hold_auth_users_lock,
    lock_args,
    lock_timeouts_since,
    reap,
    released_when_blocked,
    run,
    running_run,
    seed_auth_users,
    seed_existing,
    server_log_size,
    snapshot,
    spawn,
    under_load,
    verify,
    wait_until,
)
from tests.seeding import ghost_count, head_revision

HEAD = head_revision()


@pytest.fixture(scope="module")
def bouncer(pg):
    pooler = ThrowawayPgBouncer(pg.server.host, pg.server.port).start()
    try:
        yield pooler
    finally:
        pooler.stop()


def lock_timeouts_seen_by_pooled_sessions(url: str, clients: int = 4, rounds: int = 25) -> set[str]:
    """``SHOW lock_timeout`` from several pooled sessions: a session-level SET would leak here."""
    conns = [psycopg2.connect(url) for _ in range(clients)]
    try:
        seen = set()
        for _ in range(rounds):
            for conn in conns:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SHOW lock_timeout")
                    seen.add(cur.fetchone()[0])
        return seen
    finally:
        for conn in conns:
            conn.close()


def walked(stdout: str) -> int:
    match = re.search(r"walked (\d+) auth user", stdout)
    assert match, stdout
    return int(match.group(1))


def status_json(url: str) -> tuple[int, dict]:
    proc = run(ghostsync_argv("status", "--json"), url)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_upgrade_backfill_status_downgrade_through_pgbouncer(db, bouncer, scale):
    url, auth_url = bouncer.url(db.name), bouncer.url(db.name, AUTH_ROLE)
    seed_existing(db, scale.members, scale.ghosts)

    before = snapshot(db)
    phase = under_load(scale, auth_url, lambda: run(alembic_argv(*lock_args(scale), "upgrade", "head"), url))
    assert phase.result.returncode == 0, phase.result.stderr
    outcome = verify(db, before, phase.report)
    figures(db, "through PgBouncer: alembic upgrade head", phase, outcome)
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    assert lock_timeouts_seen_by_pooled_sessions(url) == {"0"}, "lock_timeout leaked into pooled sessions"

    code, found = status_json(url)
    assert (code, found["healthy"], found["ghosts"], found["revision"]) == (0, True, 0, HEAD), found

    seed_auth_users(db, scale.ghosts, "restored", bypass_triggers=True)
    assert ghost_count(db) == scale.ghosts
    before = snapshot(db)
    phase = under_load(scale, auth_url,
                       lambda: run(ghostsync_argv("backfill", "--batch-size", str(scale.batch_size)), url))
    assert phase.result.returncode == 0, phase.result.stderr
    outcome = verify(db, before, phase.report)
    figures(db, "through PgBouncer: ghostsync backfill", phase, outcome)
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    assert outcome.records_affected == scale.ghosts

    before = snapshot(db)
    between = {}

    def roll_back_and_reinstall():
        down = run(alembic_argv(*lock_args(scale), "downgrade", "base"), url)
        between["triggers"] = db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                                       "AND NOT tgisinternal")
        between["status"] = status_json(url)
        return down, run(alembic_argv(*lock_args(scale), "upgrade", "head"), url)

    phase = under_load(scale, auth_url, roll_back_and_reinstall)
    down, up = phase.result
    assert down.returncode == 0, down.stderr
    assert up.returncode == 0, up.stderr
    outcome = verify(db, before, phase.report)
    figures(db, "through PgBouncer: alembic downgrade base + upgrade head", phase, outcome)
    assert between["triggers"] == 0
    code, found = between["status"]
    assert (code, found["up"], found["error"]["code"]) == (2, False, "not_installed"), \
        "status, between downgrade and upgrade, says not installed"
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    code, found = status_json(url)
    assert (code, found["healthy"], found["ghosts"], found["revision"]) == (0, True, 0, HEAD), found
    assert lock_timeouts_seen_by_pooled_sessions(url) == {"0"}


def test_lock_timeout_holds_through_pgbouncer(db, bouncer, scale):
    """The lock budget set per transaction through the pooler: the upgrade waits for the long
    transaction, retries, and succeeds; requests through the pooler never stall longer than the
    default budget (plus the margin)."""
    url, auth_url = bouncer.url(db.name), bouncer.url(db.name, AUTH_ROLE)
    seed_existing(db, scale.members, scale.ghosts)
    before = snapshot(db)
    log_offset = server_log_size(db)
    with released_when_blocked(db, hold_auth_users_lock(db)) as start_clock:

        def upgrade_while_blocked():
            start_clock()
            return run(alembic_argv(*lock_args(scale), "upgrade", "head"), url)

        phase = under_load(scale, auth_url, upgrade_while_blocked)
    assert phase.result.returncode == 0, phase.result.stderr
    timeouts = lock_timeouts_since(db, log_offset)
    outcome = verify(db, before, phase.report)
    figures(db, "through PgBouncer: upgrade head behind a long transaction (ended after two cancelled attempts)",
            phase, outcome,
            f"the default lock budget ({scale.lock_timeout_ms} ms) cancelled {timeouts} attempt(s), then it "
            "succeeded")
    assert timeouts >= 1, "the upgrade never waited for the lock"
    assert_signups_unharmed(phase, scale)
    assert not outcome.problems, outcome.problems
    assert lock_timeouts_seen_by_pooled_sessions(url) == {"0"}


def test_backfill_killed_through_pgbouncer_is_marked_interrupted(db, bouncer, scale):
    """The audit log's contract through the pooler too: a run killed mid-way is marked 'interrupted'
    by the next run, which resumes where it stopped.

    The backfill is killed between two batches (stopped, then SIGKILLed once its server session is
    idle), as a deploy runner's timeout or the OOM killer may kill it at any instant.

    Through a transaction-mode pooler the run's server session (pg_backend_pid, backend_start)
    outlives the killed client and may serve the next run; what tells the run is dead there is
    that it has made no progress for --dead-after."""
    url = bouncer.url(db.name)
    seed_existing(db, 1000, 0)
    assert run(alembic_argv("upgrade", "head"), url).returncode == 0
    seed_auth_users(db, scale.fault_ghosts, "restored", bypass_triggers=True)
    before = snapshot(db)
    total = int(db.value("SELECT count(*) FROM auth.users"))
    proc = spawn(ghostsync_argv("backfill", "--batch-size", str(scale.fault_batch_size)), url)
    try:
        at_kill = wait_until(lambda: running_run(db, before.audit_id, 3) or proc.poll() is not None, timeout=120)
        proc.send_signal(signal.SIGSTOP)
        idle = wait_until(lambda: db.value(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'ghostsync-backfill' AND state <> 'idle'") == 0, timeout=30, interval=0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        reap(proc)
    assert isinstance(at_kill, tuple) and proc.returncode == -signal.SIGKILL, "killed mid-run"
    assert idle, "the backfill's server session never went idle"
    left_after_kill = ghost_count(db)
    # The pooled server session the killed run recorded lives on: what marks the run dead is
    # that it has made no progress for --dead-after (60 s by default, 2 s here).
    time.sleep(2.5)
    again = run(ghostsync_argv("backfill", "--batch-size", str(scale.fault_batch_size), "--dead-after", "2s"), url)
    assert again.returncode == 0, again.stderr
    outcome = verify(db, before, statuses=("interrupted", "succeeded"))
    reliability.record(
        f"pg{db.owner.major} through PgBouncer: backfill SIGKILLed between batches "
        f"({scale.fault_ghosts - left_after_kill} of {scale.fault_ghosts} repaired), run again: "
        f"{again.stdout.strip()}; {outcome.line()}")
    assert outcome.ghosts == 0 and outcome.duplicates == 0 and outcome.records_affected == scale.fault_ghosts
    assert outcome.statuses == ["interrupted", "succeeded"], (
        f"audit runs {outcome.statuses}: the killed run was not marked interrupted, because the pooled "
        "server session it recorded (pid, backend_start) is still alive")
    assert "resuming after" in again.stderr
    assert walked(again.stdout) < total
