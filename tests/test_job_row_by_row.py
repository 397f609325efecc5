"""ghostsync_0003's job on the revisions' own runner (``ghostsync.migrations.jobs``): adoption meets the sweep.

Issue 18 §1 (a profile the app's table stops is recorded and the run ends ``partial``, never
``succeeded``; only the synced columns the table has are written, a timestamp without time zone as
UTC) on the path of issue 20 §3 (0003 runs through ``jobs.run``, its walk ends with a sweep that
waits for the writers of auth.users). Each case reaches a part of that runner that the install
tests do not: the sweep's own statement (REPAIR_RECENT) on an adopted table, a row the sweep
cannot write, and an insert an app's BEFORE INSERT trigger swallows during the walk.

Races are held open as in tests/test_backfill_horizon.py: the import's transaction stays open until
the upgrade is seen waiting for it, and only then commits.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest

from ghostsync.testing.fixtures import SupabaseDatabase
from ghostsync.testing.server import SUPERUSER
from tests.loadcheck import wait_until
from tests.seeding import audit_rows, ghost_count, seed_bulk_ghosts, seed_ghosts

# Lower than every id gen_random_uuid() makes in practice: behind the keyset walk's position.
FIRST_ID = "00000000-0000-4000-8000-000000000001"
WAITING = ("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
           "AND query LIKE '%virtualtransaction = ANY%'")


def replica_import(db: SupabaseDatabase, email: str) -> Any:
    """A restore's insert (replica mode: no trigger fires) of one account, left open."""
    conn = psycopg2.connect(db.url(SUPERUSER))
    with conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        cur.execute("INSERT INTO auth.users (id, email, created_at, updated_at) "
                    "VALUES (%s, %s, '2026-05-01 08:00:00+00', '2026-05-02 09:00:00+00')", (FIRST_ID, email))
    return conn


def upgrade_across(db: SupabaseDatabase, importer: Any) -> list[BaseException]:
    """0003 with ``importer`` open across its horizon, committed once the sweep waits for it."""
    failure: list[BaseException] = []

    def upgrade() -> None:
        try:
            db.upgrade("ghostsync_0003", batch_size="50")
        except BaseException as exc:
            failure.append(exc)

    runner = threading.Thread(target=upgrade, name="0003", daemon=True)
    try:
        runner.start()
        assert wait_until(lambda: not runner.is_alive() or bool(db.value(WAITING)), timeout=120)
        importer.commit()
        runner.join(timeout=120)
    finally:
        importer.close()
    assert not runner.is_alive()
    return failure


# RLS off and SELECT granted to the API roles: other users can read it, so 0001 adds no column and
# ghostsync writes only what the table has; its timestamps have no time zone.
APP_EXPOSED_LOCAL_TIMESTAMPS = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  email_verified boolean, created_at timestamp, updated_at timestamp, username text
);
GRANT SELECT ON public.users TO anon, authenticated;
"""


def test_0003_sweep_writes_only_the_columns_the_table_has_as_utc(db: SupabaseDatabase,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    db.sql(APP_EXPOSED_LOCAL_TIMESTAMPS, user="postgres")
    seed_bulk_ghosts(db, 120)
    db.upgrade("ghostsync_0002")
    assert db.value("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.users'::regclass "
                    "AND attname = 'email'") == 0
    monkeypatch.setenv("PGTZ", "Europe/Berlin")
    failure = upgrade_across(db, replica_import(db, "import@example.com"))
    assert not failure, failure
    assert ghost_count(db) == 0
    assert db.sql("SELECT created_at::text, updated_at::text FROM public.users WHERE id = %s", (FIRST_ID,)) == \
        [("2026-05-01 08:00:00", "2026-05-02 09:00:00")]
    [(run_status, affected, _finished, details)] = audit_rows(db)
    assert (run_status, affected, details.get("swept")) == ("succeeded", 121, True)


APP_CHECK_ON_IMPORTS = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  email text CHECK (email NOT LIKE 'import%'),
  email_verified boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""


def test_0003_a_row_its_sweep_cannot_write_is_named_and_the_run_ends_partial(db: SupabaseDatabase) -> None:
    db.sql(APP_CHECK_ON_IMPORTS, user="postgres")
    seed_bulk_ghosts(db, 120)
    db.upgrade("ghostsync_0002")
    failure = upgrade_across(db, replica_import(db, "import@example.com"))
    assert not failure, failure  # the upgrade goes on: the audit row says what stays and why
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0003"
    assert ghost_count(db) == 1
    [(run_status, affected, finished, details)] = audit_rows(db)
    assert (run_status, affected, finished) == ("partial", 120, True)
    [unrepairable] = details["unrepairable"]
    assert unrepairable["id"] == FIRST_ID and unrepairable["sqlstate"] == "23514"
    assert "1 ghost(s) could not be given a profile" in details["error"]
    assert "example.com" not in str(details), "SQLSTATE and message only: the DETAIL holds row data"


SWALLOWING_TRIGGER = """
CREATE FUNCTION public.only_invited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.email LIKE '%sso%' THEN
    RETURN NULL;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER only_invited BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.only_invited();
"""


def test_0003_an_insert_an_app_trigger_swallows_is_named_and_the_run_ends_partial(db: SupabaseDatabase) -> None:
    db.sql(APP_CHECK_ON_IMPORTS.replace("CHECK (email NOT LIKE 'import%')", "") + SWALLOWING_TRIGGER,
           user="postgres")
    seed_ghosts(db)
    db.upgrade("ghostsync_0003", batch_size="2")
    assert ghost_count(db) == 1
    [(run_status, affected, _finished, details)] = audit_rows(db)
    assert (run_status, affected) == ("partial", 4)
    [unrepairable] = details["unrepairable"]
    assert unrepairable["sqlstate"] == "02000"
    assert "BEFORE INSERT trigger only_invited" in unrepairable["message"]
