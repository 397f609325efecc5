"""The default lock budget: no request of the auth service waits more than 500 ms per attempt on the
locks of any ghostsync step, on every role setup, and the deploy still succeeds.

With ghostsync's DEFAULTS (no -x, no GHOSTSYNC_* variable: ``lock_timeout`` 400ms shared out among
the tables a step locks, ``lock_retries`` 20, ``lock_backoff`` 100ms doubling up to 2s), under a
mixed load of signups, sign-ins and token refreshes (``AuthLoad``, 2:1:1, as
``supabase_auth_admin``), ``ghostsync migrate upgrade head`` and ``ghostsync migrate downgrade
base`` run behind a long transaction of the auth service that holds a lock (on ``auth.users``; on
"hosted", where a DROP TRIGGER through supautils locks users, audit_log_entries, identities,
refresh_tokens and sessions one after another, also on ``auth.sessions``), released after
``scale.hold_s``. On each role setup ("membership", "current", "hosted"):

- every lock wait of every request is measured by the server: pg_locks, sampled every 10 ms,
  gives the moment each wait began (``waitstart``) and the last moment it was seen waiting. The
  test asserts that no request was seen waiting longer than ``TARGET_MS`` (500 ms), and, with a
  stated tolerance of one sampling gap (``TOLERANCE_MS``, the gaps are measured), that none can
  have waited longer than ``TARGET_MS + TOLERANCE_MS``. A wait covers all of a step's locks
  together and the time they are held until its transaction commits, since a request that
  queues behind the step waits for exactly that;
- the deploy succeeds once the transaction is over (on "current" the downgrade stops with one
  line: the trigger cannot be dropped there; nothing of the failing revision is applied);
- the migration's log says, for every locking step, on which attempt its locks were taken.

A control runs the same long transaction and one unguarded LOCK TABLE: the sampler sees requests
wait longer than the target, so the measurement is not blind. The figures are printed in the
terminal summary and kept in docs/RELIABILITY.md.
"""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

import psycopg2
import pytest

from ghostsync import chain, settings
from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.fixtures import supabase_database
from tests import reliability
from tests.loadcheck import (
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
)
from tests.seeding import head_revision

TARGET_MS = 500
TOLERANCE_MS = 50  # one sampling gap: the sampler polls every 10 ms; the longest gap is asserted below it
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


def deploy(db: Any, scale: Any, direction: str, holder_table: str) -> tuple[Phase, Any]:
    """Run the deploy command with the defaults, under mixed load, behind the long transaction."""
    target = "head" if direction == "upgrade" else "base"
    holder = holder_for(db, holder_table)
    holder_pid = holder.get_backend_pid()
    with released_after(holder, scale.hold_s) as start_clock:

        def command() -> Any:
            start_clock()
            return run(ghostsync_argv("migrate", direction, target), db.url(), defaults=True)

        phase = under_load(scale, db.url(AUTH_ROLE), command, mixed=True)
    return phase, holder_pid


def summarize(waits: list[Any]) -> str:
    if not waits:
        return "no request waited on a lock"
    longest = waits[0]
    by_target = Counter(w.target for w in waits)
    return (f"{len(waits)} request lock wait(s), longest {longest.waited_s * 1000:.0f} ms "
            f"(<= {longest.bound_s * 1000:.0f} ms) on {longest.target}; waits on "
            + ", ".join(f"{t} {n}" for t, n in by_target.most_common()))


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
        with LockWaitSampler(db.url("supabase_admin")) as sampler:
            phase, holder_pid = deploy(db, scale, direction, holder_table)
        proc = phase.result
        log = proc.stdout + proc.stderr
        requests = sampler.waits_of(AUTH_ROLE, exclude_pids=(holder_pid,))
        ddl = sampler.waits_of_application(MIGRATE)
        steps = step_lines(log)
        report = phase.report
        kinds = report.kinds
        line = (f"pg{pg.major} {roles}: {direction} {'head' if direction == 'upgrade' else 'base'} with the defaults "
                f"behind a {scale.hold_s:.0f} s transaction on {holder_table}: exit {proc.returncode}; "
                f"{summarize(requests)}; ghostsync waited {len(ddl)} time(s), longest "
                f"{(ddl[0].waited_s * 1000 if ddl else 0):.0f} ms; steps: "
                + ", ".join(f"{s.what.split(' on ')[0]} {'gave up after' if s.gave_up else 'attempt'} {s.attempts}"
                            for s in steps)
                + f"; {report.summary()}; sampler {sampler.samples} samples, longest gap "
                f"{sampler.longest_gap_s * 1000:.0f} ms")
        reliability.record(line)
        print(line)

        # the load: every kind of request ran, none failed
        assert kinds["signup"] and kinds["sign_in"] and kinds["refresh"], kinds
        assert report.failed == 0, report.summary()
        assert report.in_window(phase.began, phase.ended) > 0

        # the measurement saw what it measures: ghostsync's steps waited behind the long transaction
        assert sampler.samples > 50 and sampler.longest_gap_s * 1000 < TOLERANCE_MS, (
            f"sampling too coarse for the stated tolerance: longest gap {sampler.longest_gap_s * 1000:.0f} ms")
        assert ddl, "ghostsync's migration never waited for a lock: the long transaction did not block it"
        assert max(s.attempts for s in steps) >= 2, f"no step needed a second attempt: {steps}"

        # the budget: no request waited more than 500 ms per attempt
        over = [w for w in requests if w.waited_s * 1000 > TARGET_MS]
        assert not over, f"{len(over)} request lock wait(s) over {TARGET_MS} ms: {over[:5]}"
        beyond = [w for w in requests if w.bound_s * 1000 > TARGET_MS + TOLERANCE_MS]
        assert not beyond, f"request lock wait(s) over {TARGET_MS} + {TOLERANCE_MS} ms: {beyond[:5]}"

        # the log says how many lock attempts each locking step needed
        ran = {m for m in log.split() if m.startswith("ghostsync_0")}
        expected = {r for r in locking_revisions(direction) if r in ran}
        assert len(steps) >= 1 and all(s.attempts >= 1 for s in steps), log[-3000:]

        if roles == "current" and direction == "downgrade":
            # today's roles without supautils cannot drop the trigger: one line, nothing half-done
            failed = [ln for ln in log.splitlines() if ln.startswith("FAILED:")]
            assert proc.returncode != 0 and len(failed) == 1, log[-3000:]
            assert "cannot drop trigger" in failed[0] and "supautils" in failed[0], failed[0]
            assert "Traceback" not in log
            left = db.value("SELECT version_num FROM public.alembic_version")
            status = run(ghostsync_argv("status"), db.url(), defaults=True)
            assert status.returncode == 0, status.stdout  # healthy, at the revision before the failing one
            assert f"revision          {left}" in status.stdout and "behind_head" in status.stdout
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
            assert db.value("SELECT to_regclass('public.alembic_version') IS NULL OR NOT EXISTS "
                            "(SELECT 1 FROM public.alembic_version)")
            assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                            "AND tgname LIKE 'ghostsync%%'") == 0


def test_the_measurement_sees_an_unguarded_lock(db, scale):
    """Control: the same long transaction, the same load, and a LOCK TABLE without lock_timeout. The
    sampler sees requests wait about as long as the transaction lasts: far over the target."""
    seed_existing(db, 1000, 0)
    with LockWaitSampler(db.url("supabase_admin")) as sampler:
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
    requests = sampler.waits_of(AUTH_ROLE, exclude_pids=(holder_pid,))
    reliability.record(f"pg{db.owner.major} control: an unguarded LOCK TABLE behind the same {scale.hold_s:.0f} s "
                       f"transaction: {summarize(requests)}; {phase.report.summary()}")
    assert requests and requests[0].waited_s * 1000 > TARGET_MS + TOLERANCE_MS, summarize(requests)
    assert requests[0].waited_s < scale.hold_s + 5
