"""A backfill vouches only for what it saw (issue 20, section 1).

A replica-mode import (``session_replication_role = replica``: no trigger fires, so no profile is
written) that began before a backfill's horizon and commits after the run's last look left a ghost
while the run said "succeeded". Both runs that claim "no ghost left" now wait, bounded, for the
transactions writing auth.users at their end, then look again; a writer still open past the wait
makes the run say it is not complete, never "succeeded":

- ``ghostsync backfill`` (the runtime's walk in physical order and its sweep);
- ghostsync_0003's keyset walk by id, which had no sweep at all: an account committed behind its
  position while it walked (here with the lowest id of all) was never seen.

Each race is held open deterministically: the import's transaction stays open (uncommitted) until
the run is seen waiting for it (its backend polling for the writers), or has ended (main: it
never waits), and only then commits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from typing import Any

import psycopg2
import pytest
from alembic.util import CommandError

from ghostsync import names
from ghostsync.testing.fixtures import SupabaseDatabase
from ghostsync.testing.server import SUPERUSER
from tests.loadcheck import wait_until
from tests.paths import REPO
from tests.seeding import audit_rows, ghost_count, seed_bulk_ghosts

# Lower than every id gen_random_uuid() makes in practice: behind any keyset walk's position.
FIRST_ID = "00000000-0000-4000-8000-000000000001"
WAITING = ("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
           "AND query LIKE '%virtualtransaction = ANY%'")


def replica_import(db: SupabaseDatabase, user_id: str = FIRST_ID) -> Any:
    """An import as a restore or a bulk load runs it: replica mode, one account inserted, not committed."""
    conn = psycopg2.connect(db.url(SUPERUSER))
    with conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        cur.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", (user_id, f"import-{user_id}@example.com"))
    return conn


def waiting_or_done(db: SupabaseDatabase, done: Any) -> bool:
    return bool(done() or db.value(WAITING))


def backfill_cli(db: SupabaseDatabase, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTSYNC_")}
    environ.update(DATABASE_URL=db.url(), **env)
    return subprocess.Popen([sys.executable, "-m", "ghostsync", "backfill", "--batch-size", "50"], env=environ,
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def has_profile(db: SupabaseDatabase, user_id: str = FIRST_ID) -> bool:
    return bool(db.value("SELECT count(*) FROM public.users WHERE id = %s", (user_id,)))


# -- ghostsync backfill ---------------------------------------------------------------------------

def test_backfill_waits_for_an_import_open_across_its_horizon(db: SupabaseDatabase) -> None:
    db.upgrade()
    seed_bulk_ghosts(db, 300)
    importer = replica_import(db)
    try:
        proc = backfill_cli(db)
        assert wait_until(lambda: waiting_or_done(db, lambda: proc.poll() is not None), timeout=120)
        importer.commit()
        out, err = proc.communicate(timeout=120)
    finally:
        importer.close()
    assert proc.returncode == 0, out + err
    assert "backfill succeeded" in out
    assert has_profile(db), "the imported account committed after the run's last look is a ghost"
    assert ghost_count(db) == 0


def test_backfill_says_incomplete_when_an_import_stays_open(db: SupabaseDatabase) -> None:
    db.upgrade()
    seed_bulk_ghosts(db, 50)
    importer = replica_import(db)
    try:
        proc = backfill_cli(db, GHOSTSYNC_WRITERS_WAIT="1s")
        out, err = proc.communicate(timeout=120)
        importer.commit()
    finally:
        importer.close()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "backfill not complete: 1 transaction(s) writing auth.users were still open after 1 s: the accounts "
        "they write cannot be vouched for; run it again once they have ended"], err
    assert "backfill interrupted" in out
    assert audit_rows(db)[-1][0] == "interrupted"
    assert not has_profile(db)

    # Run again once the import has ended: resumed, its full sweep finds the account.
    proc = backfill_cli(db)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert has_profile(db) and ghost_count(db) == 0


# -- ghostsync_0003's keyset walk ---------------------------------------------------------------------

def test_0003_sees_an_account_committed_behind_its_walk(db: SupabaseDatabase) -> None:
    seed_bulk_ghosts(db, 300)
    db.upgrade("ghostsync_0002")
    importer = replica_import(db)
    failure: list[BaseException] = []

    def upgrade() -> None:
        try:
            db.upgrade("ghostsync_0003", batch_size="50")
        except BaseException as exc:
            failure.append(exc)

    runner = threading.Thread(target=upgrade, name="0003", daemon=True)
    try:
        runner.start()
        assert wait_until(lambda: waiting_or_done(db, lambda: not runner.is_alive()), timeout=120)
        importer.commit()
        runner.join(timeout=120)
    finally:
        importer.close()
    assert not runner.is_alive() and not failure, failure
    assert has_profile(db), "0003 said succeeded and left the account committed behind its walk a ghost"
    assert ghost_count(db) == 0
    [(status, affected, _finished, details)] = audit_rows(db)
    assert status == "succeeded" and affected == 301 and details.get("swept") is True


def test_0003_fails_in_one_line_when_an_import_stays_open(db: SupabaseDatabase) -> None:
    seed_bulk_ghosts(db, 20)
    db.upgrade("ghostsync_0002")
    importer = replica_import(db, str(uuid.uuid4()))
    try:
        with pytest.raises(CommandError) as refused:
            db.upgrade("ghostsync_0003", writers_wait="1s")
    finally:
        importer.rollback()
        importer.close()
    line = str(refused.value)
    assert line.startswith("ghostsync: backfill_ghost_users stopped (audit row ") and "\n" not in line
    assert "1 transaction(s) writing auth.users were still open after 1 s" in line
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0002"
    assert audit_rows(db, names.BACKFILL_JOB)[-1][0] == "interrupted"
