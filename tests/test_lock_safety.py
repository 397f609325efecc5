"""Steps that lock auth.users wait at most lock_timeout, retry with backoff, and give up cleanly."""

from __future__ import annotations

import threading
import time

from tests.loadcheck import hold_auth_users_lock
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
    assert proc.returncode != 0
    assert "FAILED: gave up on 'create or adopt public.users'" in out
    assert "3 attempts" in out
    assert "Traceback" not in out
    assert waited < 30
    assert db.value("SELECT to_regclass('public.users')") is None, "nothing of the revision was applied"


def test_upgrade_succeeds_when_the_lock_frees_during_retries(db):
    seed_ghosts(db)
    blocker = hold_auth_users_lock(db)
    release = threading.Timer(0.6, blocker.rollback)
    release.start()
    try:
        db.upgrade(lock_timeout="200ms", lock_retries="8")
    finally:
        release.join()
        blocker.close()
    assert ghost_count(db) == 0


def test_lock_timeout_is_set_per_transaction(db):
    """SET LOCAL, not SET: through a transaction-mode pooler a session SET would leak."""
    import alembic.command

    config = db.alembic_config()
    from io import StringIO

    buffer = StringIO()
    config.output_buffer = buffer
    alembic.command.upgrade(config, "head", sql=True)
    script = buffer.getvalue()
    assert "SET LOCAL lock_timeout = '2000ms';" in script
    assert "SET lock_timeout" not in script
