"""A revision's data job waits for a held account at most its lock budget, on every driver (issue 19's gap).

The batches of ghostsync_0003 (backfill) and ghostsync_0009 (resync) lock accounts while they write
profiles. Their row-lock bound used to be a ``set_config`` statement sent ahead of the batch in the
same query text, which only psycopg2 honours: psycopg 3 reads the first result of a multi-statement
query, and asyncpg sends one statement at a time, so the bound was skipped and a host's
``alembic upgrade`` on ``postgresql+psycopg://`` or ``postgresql+asyncpg://`` waited for as long as
any transaction held one account. The bound now lives inside the batch statement itself.

Deterministic: one account is held FOR UPDATE by an open transaction for the whole upgrade (no
timing); with ``-x lock_timeout=100ms -x lock_retries=1`` the upgrade must stop within seconds with
SQLSTATE 55P03 (on main it waited until the subprocess's timeout), and once the account is released
the same upgrade goes through. The stop is one line (Alembic's ``FAILED:``), not a traceback.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg2
import pytest

from ghostsync.testing.fixtures import SupabaseDatabase
from tests.seeding import ghost_count, seed_ghosts
from tests.test_host_env import alembic, host_project, per_migration, refusal, versions

BOUND = ("-x", "lock_timeout=100ms", "-x", "lock_retries=1", "-x", "lock_backoff=10ms")
# Far above what the bound allows (2 tries of 100 ms plus start-up), far below "forever".
GIVE_UP_S = 45.0

JOB_NAMES = {"ghostsync_0003": "backfill_ghost_users", "ghostsync_0009": "resync_profiles"}
DRIVERS = {"psycopg3": ("postgresql+psycopg", "generic"), "asyncpg": ("postgresql+asyncpg", "async")}


def hold_one_account(db: SupabaseDatabase) -> object:
    """An admin's open session that locked one account (FOR UPDATE) and has not ended."""
    conn = psycopg2.connect(db.url("postgres"))
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM auth.users ORDER BY id LIMIT 1 FOR UPDATE")
    return conn


@pytest.mark.parametrize("driver", sorted(DRIVERS))
@pytest.mark.parametrize("job", ["ghostsync_0003", "ghostsync_0009"])
def test_a_held_account_bounds_the_job(db: SupabaseDatabase, tmp_path: Path, driver: str, job: str) -> None:
    seed_ghosts(db)
    below = {"ghostsync_0003": "ghostsync_0002", "ghostsync_0009": "ghostsync_0008"}[job]
    db.upgrade(below)
    if job == "ghostsync_0009":
        db.sql("UPDATE public.users SET email = 'stale@example.com'")  # every profile stale: 0009 locks them all
    scheme, template = DRIVERS[driver]
    ini = host_project(tmp_path / "host", db.url(scheme=scheme), template=template)
    per_migration(ini)
    holder = hold_one_account(db)
    try:
        try:
            proc = alembic(ini, *BOUND, "upgrade", job, timeout=GIVE_UP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{job} on {driver} waited on the held account for {GIVE_UP_S:.0f} s: its batch "
                        "statement is not bounded")
    finally:
        holder.rollback()
        holder.close()
    line = refusal(proc)
    assert line.startswith(f"ghostsync: {JOB_NAMES[job]} stopped: an account stayed locked by another "
                           "transaction through 2 tries of 100ms (lock timeout, SQLSTATE 55P03)"), line
    assert versions(db) == {below}

    # The account free again: the same command completes the job.
    proc = alembic(ini, *BOUND, "upgrade", job, timeout=GIVE_UP_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert versions(db) == {job}
    if job == "ghostsync_0003":
        assert ghost_count(db) == 0
    else:
        assert not db.value("SELECT count(*) FROM public.users WHERE email = 'stale@example.com'")
