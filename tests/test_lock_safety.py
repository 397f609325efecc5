"""Steps that lock auth.users wait at most their lock budget, retry with backoff, and give up cleanly.

The per-attempt bound under the auth service's load, with the defaults, is tests/test_lock_budget.py's;
these are the mechanics: give up in one line with nothing applied, succeed when the lock frees during
the retries, and the budget set per transaction (online and offline), never per session.
"""

from __future__ import annotations

import threading
import time

from ghostsync.migrations import settings
from tests.loadcheck import LockWaitSampler, hold_auth_users_lock, step_lines, wait_until
from tests.seeding import ghost_count, seed_ghosts


def test_upgrade_gives_up_cleanly_when_the_lock_never_frees(db):
    seed_ghosts(db)
    blocker = hold_auth_users_lock(db)
    try:
        began = time.monotonic()
        proc = db.alembic_cli("-x", "lock_timeout=100ms", "-x", "lock_retries=2", "upgrade", "head")
        waited = time.monotonic() - began
    finally:
        blocker.rollback()
        blocker.close()
    out = proc.stdout + proc.stderr
    failed = [line for line in out.splitlines() if line.startswith("FAILED:")]
    assert proc.returncode != 0
    assert len(failed) == 1, out
    assert failed[0].startswith("FAILED: ghostsync: gave up on create or adopt public.users: its locks were not "
                                "free within 100 ms in 3 attempts"), failed[0]
    assert "nothing of this revision was applied" in failed[0]
    assert [(s.attempts, s.gave_up) for s in step_lines(out)] == [(3, True)], "the log names the attempts"
    assert "Traceback" not in out
    assert waited < 30
    assert db.value("SELECT to_regclass('public.users')") is None, "nothing of the revision was applied"
    assert (db.value("SELECT to_regclass('public.alembic_version')") is None
            or db.value("SELECT count(*) FROM public.alembic_version") == 0)


def test_upgrade_succeeds_when_the_lock_frees_during_retries(db):
    """Deterministic: the long transaction ends only once the step has been seen waiting for it twice."""
    seed_ghosts(db)
    blocker = hold_auth_users_lock(db)
    done = threading.Event()

    def release_after_two_waits() -> None:
        wait_until(lambda: done.is_set() or len(sampler.waits_of_application("ghostsync-migrate")) >= 2, 30, 0.01)
        blocker.rollback()

    with LockWaitSampler(db.url("supabase_admin")) as sampler:
        release = threading.Thread(target=release_after_two_waits, daemon=True)
        release.start()
        try:
            proc = db.alembic_cli("-x", "lock_timeout=200ms", "-x", "lock_retries=8", "upgrade", "head")
        finally:
            done.set()
            release.join(timeout=40)
            blocker.close()
    assert proc.returncode == 0, proc.stderr
    assert ghost_count(db) == 0
    steps = step_lines(proc.stderr)
    assert steps and steps[0].what == "create or adopt public.users" and steps[0].attempts >= 2, steps
    assert all(not s.gave_up for s in steps)


def test_lock_budget_is_set_per_transaction(db):
    """set_config(..., true) / SET LOCAL, never a session SET: through a transaction-mode pooler a
    session setting would leak into the next client's transaction. Offline every locking step is a
    retry loop inside the database with the default budget."""
    import alembic.command

    config = db.alembic_config()
    from io import StringIO

    buffer = StringIO()
    config.output_buffer = buffer
    alembic.command.upgrade(config, "head", sql=True)
    script = buffer.getvalue()
    default_ms = round(settings.parse_duration(settings.SETTINGS["lock_timeout"].default).total_seconds() * 1000)
    # the default budget shared among the step's locks, each capped at half of deadlock_timeout
    assert f"pg_catalog.set_config('lock_timeout',\n        least(greatest(10, {default_ms} / " in script
    assert "s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'" in script
    assert "EXCEPTION WHEN lock_not_available THEN" in script
    assert "SET lock_timeout" not in script and "SET LOCAL" not in script
    # online: after a deploy the session's settings are the server's own
    db.upgrade()
    assert db.value("SHOW lock_timeout", user="postgres") == "0"
