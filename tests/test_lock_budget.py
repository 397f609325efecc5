"""The default lock budget: no request of the auth service waits more than 500 ms per attempt on the
locks of any ghostsync step, on every role setup, and the deploy still succeeds.

With ghostsync's DEFAULTS (no -x, no GHOSTSYNC_* variable: ``lock_timeout`` 400ms shared out among
the tables a step locks, ``lock_retries`` 20, ``lock_backoff`` 100ms doubling up to 2s), under a
mixed load of signups, sign-ins and token refreshes (``AuthLoad``, 2:1:1, as
``supabase_auth_admin``), ``ghostsync migrate upgrade head`` and ``ghostsync migrate downgrade
base`` run behind a long transaction of the auth service that holds a lock: on ``auth.users`` and,
on "hosted", where a DROP TRIGGER through supautils locks users, audit_log_entries, identities,
refresh_tokens and sessions one after another, also on ``auth.sessions``. The transaction is
released deterministically once ghostsync's step has been seen waiting for it twice (two attempts,
each cancelled by its lock budget), so every deploy waits behind it, retries and then goes on.
On each role setup ("membership", "current", "hosted"):

- every lock wait of every request is measured twice. By the server itself: ``log_lock_waits``
  with ``deadlock_timeout`` 200ms for the auth service's role in the test database logs each
  wait longer than 200 ms and, when the request gets its lock, how long it waited, to the
  microsecond (``LockWaitLog``). And by a pg_locks sampler (every 10 ms): from the moment the
  server says the wait began (``waitstart``) to the last sample that still saw it waiting (a lower
  bound, within one sampling gap of the truth), for every wait, short ones too. A request that
  queues behind a step waits for all of the step's locks together and for the time they are held
  until its transaction commits: exactly what is measured. The test asserts that no request
  waited more than ``TARGET_MS`` (500 ms) per the server's log, with a stated tolerance of
  ``TOLERANCE_MS`` = 0 (the measure is exact; a wait under 200 ms is not logged and cannot
  approach the bound), and that the sampler saw none waiting longer either. The sampler also
  shows which tables ghostsync's own steps waited for, and how often;
- the deploy succeeds once the transaction is over; on "current" the downgrade stops at once
  with one line (today's roles cannot drop the trigger without supautils) and nothing is
  downgraded, so no request waits at all;
- the migration's log says, for every locking step, on which attempt its locks were taken.

A control runs the same long transaction and one unguarded LOCK TABLE: the log shows requests
waiting longer than the target, so the measurement is not blind. The figures are printed in the
terminal summary and kept in docs/RELIABILITY.md.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import Counter
from typing import Any

import psycopg2
import pytest

from ghostsync import chain
from ghostsync.migrations import settings
from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.fixtures import supabase_database
from tests import reliability
from tests.loadcheck import (
    LockWaitLog,
    LockWaitSampler,
    Phase,
    ghostsync_argv,
    hold_auth_sessions_lock,
    hold_auth_users_lock,
    released_after,
    run,
    seed_existing,
    snapshot,
    step_lines,
    under_load,
    verify,
    wait_until,
)
from tests.seeding import head_revision

TARGET_MS = 500
TOLERANCE_MS = 0  # the server measures each wait exactly (log_lock_waits)
MAX_HOLD_S = 30  # the long transaction ends at the latest after this, whatever happened
HEAD = head_revision()
MIGRATE = "ghostsync-migrate"

SCENARIOS = [
    ("membership", "upgrade", "auth.users"),
    ("current", "upgrade", "auth.users"),
    ("hosted", "upgrade", "auth.users"),
    ("membership", "downgrade", "auth.users"),
    ("current", "downgrade", "auth.users"),
    ("hosted", "downgrade", "auth.users"),
    ("hosted", "downgrade", "auth.sessions"),
]


def locking_revisions(direction: str) -> set[str]:
    """Revisions whose upgrade (downgrade) has a step that locks a table requests use."""
    script = chain.script_directory()
    found = set()
    for revision in script.walk_revisions():
        if revision.revision not in chain.branch_revisions(script):
            continue
        source = inspect.getsource(getattr(revision.module, direction))
        if any(mark in source for mark in ("locks=", "install_triggers(", "drop_triggers(")):
            found.add(revision.revision)
    return found


def holder_for(db: Any, table: str) -> Any:
    return hold_auth_users_lock(db) if table == "auth.users" else hold_auth_sessions_lock(db)


def deploy(db: Any, scale: Any, sampler: LockWaitSampler, direction: str,
           holder_table: str) -> tuple[Phase, int, float]:
    """Run the deploy command with the defaults, under mixed load, behind the long transaction, which
    ends once ghostsync's migration has been seen waiting for it twice (or after MAX_HOLD_S)."""
    target = "head" if direction == "upgrade" else "base"
    holder, table = holder_for(db, holder_table), holder_table
    holder_pid = holder.get_backend_pid()
    done = threading.Event()
    held: dict[str, float] = {}

    def release_when_blocked_twice() -> None:
        began = time.monotonic()
        # two waits of ghostsync's on the held table (two attempts behind the holder); a wait on another
        # table, behind a request, is not one
        wait_until(lambda: done.is_set() or len([w for w in sampler.waits_of_application(MIGRATE)
                                                 if w.target == table]) >= 2, MAX_HOLD_S, 0.01)
        holder.rollback()
        held["s"] = time.monotonic() - began

    releaser = threading.Thread(target=release_when_blocked_twice, name="release-holder", daemon=True)
    try:
        def command() -> Any:
            releaser.start()
            try:
                return run(ghostsync_argv("migrate", direction, target), db.url(), defaults=True)
            finally:
                done.set()

        phase = under_load(scale, db.url(AUTH_ROLE), command, mixed=True)
    finally:
        done.set()
        if releaser.is_alive():
            releaser.join(timeout=MAX_HOLD_S + 5)
        holder.close()
    return phase, holder_pid, held.get("s", 0.0)


def summarize(waits: list[Any]) -> str:
    """One line about the requests' lock waits (``LoggedWait``s, longest first)."""
    if not waits:
        return "no request waited more than 200 ms on a lock"
    longest = waits[0]
    by_target = Counter(w.target for w in waits)
    return (f"{len(waits)} request lock wait(s) over 200 ms, longest {longest.ms:.0f} ms on {longest.target} "
            f"({longest.mode}); waits on " + ", ".join(f"{t} {n}" for t, n in by_target.most_common()))


@pytest.mark.parametrize(("roles", "direction", "holder_table"), SCENARIOS,
                         ids=[f"{r}-{d}-behind-{t.split('.')[1]}" for r, d, t in SCENARIOS])
def test_default_lock_budget_under_auth_load(pg, supabase_servers, scale, roles, direction, holder_table):
    assert settings.SETTINGS["lock_timeout"].default == "400ms", "this test proves the shipped defaults"
    with supabase_database(supabase_servers.get(pg.major, roles)) as db:
        seed_existing(db, scale.members, scale.ghosts)
        if direction == "downgrade":
            up = run(ghostsync_argv("migrate", "upgrade", "head"), db.url(), defaults=True)
            assert up.returncode == 0, up.stderr
        before = snapshot(db)
        waits = LockWaitLog(db, AUTH_ROLE)
        with LockWaitSampler(db.url("supabase_admin")) as sampler:
            phase, holder_pid, held_s = deploy(db, scale, sampler, direction, holder_table)
        proc = phase.result
        log = proc.stdout + proc.stderr
        requests = [w for w in waits.waits() if w.pid != holder_pid]
        sampled = sampler.waits_of(AUTH_ROLE, exclude_pids=(holder_pid,))
        ddl = sampler.waits_of_application(MIGRATE)
        steps = step_lines(log)
        report = phase.report
        kinds = report.kinds
        refused = roles == "current" and direction == "downgrade"
        line = (f"pg{pg.major} {roles}: {direction} {'head' if direction == 'upgrade' else 'base'} with the defaults "
                f"behind a transaction holding {holder_table} ({held_s:.1f} s): exit {proc.returncode}; "
                f"{summarize(requests)}; sampled: {len(sampled)} request wait(s), longest "
                f"{(sampled[0].waited_s * 1000 if sampled else 0):.0f} ms"
                f"{' on ' + sampled[0].target if sampled else ''}; "
                f"ghostsync's steps waited {len(ddl)} time(s), longest "
                f"{(ddl[0].waited_s * 1000 if ddl else 0):.0f} ms, on {sorted({w.target for w in ddl})}; steps: "
                + ", ".join(f"{s.what.split(' on ')[0]} {'gave up after' if s.gave_up else 'attempt'} {s.attempts}"
                            for s in steps)
                + f"; {report.summary()}")
        reliability.record(line)
        print(line)

        # the load: every kind of request ran, none failed
        assert kinds["signup"] and kinds["sign_in"] and kinds["refresh"], kinds
        assert report.failed == 0, report.summary()
        assert report.in_window(phase.began, phase.ended) > 0

        # the budget: no request waited more than 500 ms per attempt, as the server measured it
        over = [w for w in requests if w.ms > TARGET_MS + TOLERANCE_MS]
        assert not over, f"{len(over)} request lock wait(s) over {TARGET_MS} ms: {over[:5]}"
        assert not [w for w in waits.unfinished() if w.pid != holder_pid], "a request's wait never ended"
        seen_over = [w for w in sampled if w.waited_s * 1000 > TARGET_MS]
        assert not seen_over, f"the sampler saw request(s) still waiting after {TARGET_MS} ms: {seen_over[:5]}"

        if not refused:
            # the deploy did wait behind the long transaction: its locking step needed more attempts
            assert len(ddl) >= 2, f"ghostsync's migration waited {len(ddl)} time(s) for the long transaction"
            assert max(s.attempts for s in steps) >= 2, f"no step needed a second attempt: {steps}"

        # the log says how many lock attempts each locking step needed
        ran = {m for m in log.split() if m.startswith("ghostsync_0")}
        expected = {r for r in locking_revisions(direction) if r in ran}
        assert all(s.attempts >= 1 and not s.gave_up for s in steps), log[-3000:]

        if roles == "current" and direction == "downgrade":
            # today's roles without supautils cannot drop the trigger: one line, nothing half-done
            # (refused by ghostsync migrate's preflight, before Alembic runs)
            failed = [ln for ln in log.splitlines() if ln.strip()]
            assert proc.returncode == 2 and len(failed) == 1, log[-3000:]
            assert "cannot drop" in failed[0] and "supautils" in failed[0], failed[0]
            assert "Traceback" not in log
            assert not ddl and not requests, "refused before taking any lock"
            left = db.value("SELECT version_num FROM public.alembic_version")
            status = run(ghostsync_argv("status"), db.url(), defaults=True)
            assert status.returncode == 0, status.stdout + status.stderr
            assert left == HEAD or "behind_head" in status.stdout, (left, status.stdout)
            return

        assert proc.returncode == 0, log[-3000:]
        assert len(steps) >= len(expected), (
            f"{len(expected)} revision(s) with locking steps ran ({sorted(expected)}), "
            f"but {len(steps)} step line(s) were logged:\n" + "\n".join(str(s) for s in steps))
        if direction == "upgrade":
            outcome = verify(db, before, phase.report)
            assert not outcome.problems, outcome.problems
            assert db.value("SELECT version_num FROM public.alembic_version") == HEAD
        else:
            assert (db.value("SELECT to_regclass('public.alembic_version')") is None
                    or db.value("SELECT count(*) FROM public.alembic_version") == 0)
            assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                            "AND tgname LIKE 'ghostsync%%'") == 0


def test_the_measurement_sees_an_unguarded_lock(db, scale):
    """Control: the same long transaction, the same load, and a LOCK TABLE without lock_timeout. The
    server logs requests waiting about as long as the transaction lasts: far over the target."""
    seed_existing(db, 1000, 0)
    waits = LockWaitLog(db, AUTH_ROLE)
    holder = hold_auth_users_lock(db)
    holder_pid = holder.get_backend_pid()
    with released_after(holder, scale.hold_s) as start_clock:

        def unguarded_lock() -> None:
            start_clock()
            conn = psycopg2.connect(db.url("supabase_admin"))
            try:
                with conn.cursor() as cur:
                    cur.execute("LOCK TABLE auth.users IN SHARE ROW EXCLUSIVE MODE")
                conn.commit()
            finally:
                conn.close()

        phase = under_load(scale, db.url(AUTH_ROLE), unguarded_lock, mixed=True)
    requests = [w for w in waits.waits() if w.pid != holder_pid]
    reliability.record(f"pg{db.owner.major} control: an unguarded LOCK TABLE behind the same {scale.hold_s:.0f} s "
                       f"transaction: {summarize(requests)}; {phase.report.summary()}")
    assert requests and requests[0].ms > TARGET_MS, summarize(requests)
    assert requests[0].ms < (scale.hold_s + 5) * 1000
