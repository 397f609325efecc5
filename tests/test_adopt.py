"""Existing public.users and cleanup_audit_log are adopted, never rewritten; unusable ones fail clearly."""

from __future__ import annotations

import pytest

from tests.seeding import ghost_count, ghostsync_cli, profiles, seed_ghosts

APP_USERS = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  email varchar(320),
  email_verified boolean NOT NULL DEFAULT false,
  display_name text,
  plan text NOT NULL DEFAULT 'free',
  created_at timestamp NOT NULL DEFAULT now(),
  updated_at timestamp NOT NULL DEFAULT now()
)
"""
APP_AUDIT = """
CREATE TABLE public.cleanup_audit_log (
  id serial PRIMARY KEY,
  job_name varchar(100) NOT NULL,
  status varchar(20) NOT NULL,
  records_affected integer NOT NULL DEFAULT 0,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  details jsonb NOT NULL DEFAULT '{}',
  operator text
)
"""


def relfilenode(db, table: str) -> int:
    return db.value("SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", (table,))


def test_existing_tables_are_adopted_without_rewrite(db):
    db.sql(APP_USERS, user="postgres")
    db.sql(APP_AUDIT, user="postgres")
    db.sql("INSERT INTO public.cleanup_audit_log (job_name, status, operator) VALUES ('app_job', 'done', 'ops')",
           user="postgres")
    ghosts = seed_ghosts(db)
    nodes = (relfilenode(db, "public.users"), relfilenode(db, "public.cleanup_audit_log"))
    db.upgrade()
    assert (relfilenode(db, "public.users"), relfilenode(db, "public.cleanup_audit_log")) == nodes
    assert ghost_count(db) == 0
    assert profiles(db)[str(ghosts["email_confirmed"])][:2] == ("ghost.confirmed@example.com", True)
    assert db.value("SELECT plan FROM public.users LIMIT 1") == "free"
    assert db.sql("SELECT job_name, status FROM public.cleanup_audit_log ORDER BY id") == [
        ("app_job", "done"), ("backfill_ghost_users", "succeeded"), ("resync_profiles", "succeeded")]
    assert dict(db.sql("SELECT name, created FROM ghostsync.objects WHERE kind = 'table'")) == {
        "public.users": False, "public.cleanup_audit_log": False, "ghostsync.sync_failures": True}
    # An adopted table's privileges stay the app's: status warns, ghostsync does not change them.
    assert db.value("SELECT has_table_privilege('anon', 'public.cleanup_audit_log', 'SELECT')") is True
    found = ghostsync_status(db)
    assert found["healthy"] is True
    assert {w["code"] for w in found["warnings"]} >= {"open_privileges"}


def ghostsync_status(db) -> dict:
    import json

    proc = ghostsync_cli(db, "status", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_a_key_with_include_columns_is_still_a_key(db):
    db.sql("CREATE TABLE public.users (id uuid, email text, email_verified boolean NOT NULL DEFAULT false,"
           " created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),"
           " CONSTRAINT users_key UNIQUE (id) INCLUDE (email))", user="postgres")
    seed_ghosts(db)
    db.upgrade()
    assert ghost_count(db) == 0


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        # a missing synced column is added (or, on a table others can read, left out): tests/test_adopt_own_table.py
        ("CREATE TABLE public.users (id text PRIMARY KEY, created_at timestamptz, updated_at timestamptz)",
         "existing table public.users cannot be adopted: column id is text (needs uuid)"),
        ("CREATE TABLE public.users (id text PRIMARY KEY, email text, email_verified boolean,"
         " created_at timestamptz, updated_at timestamptz)",
         "column id is text (needs uuid)"),
        # an app column NOT NULL without a default is the app's: adopted (tests/test_adopt_own_table.py)
        ("CREATE TABLE public.users (id uuid, email text, email_verified boolean,"
         " created_at timestamptz, updated_at timestamptz)",
         "column id is neither the primary key nor unique"),
        ("CREATE TABLE public.cleanup_audit_log (id int, job_name text, status text, started_at timestamptz)",
         "existing table public.cleanup_audit_log cannot be adopted: column records_affected is missing"),
        # phone and anonymous users have no email: every such signup would fail for good
        ("CREATE TABLE public.users (id uuid PRIMARY KEY, email text NOT NULL, email_verified boolean,"
         " created_at timestamptz, updated_at timestamptz)",
         "column email is NOT NULL, but phone and anonymous users have no email (drop the NOT NULL)"),
        ("CREATE TABLE public.users (id uuid PRIMARY KEY, email varchar(100), email_verified boolean,"
         " created_at timestamptz, updated_at timestamptz)",
         "column email is character varying(100), but auth.users holds values up to 255 characters (widen it)"),
        # a deferrable key cannot serve ON CONFLICT (id), as PostgreSQL judges it
        ("CREATE TABLE public.users (id uuid PRIMARY KEY DEFERRABLE, email text, email_verified boolean,"
         " created_at timestamptz, updated_at timestamptz)",
         "the key on column id is DEFERRABLE, and a deferrable key cannot serve ON CONFLICT (id)"),
    ],
)
def test_unusable_existing_table_fails_with_a_clear_message(db, ddl, message):
    db.sql(ddl, user="postgres")
    seed_ghosts(db)
    before = db.sql("SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public' ORDER BY 1, 2")
    proc = db.alembic_cli("upgrade", "head")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "FAILED: ghostsync: " in out and message in out, out
    assert "nothing was changed" in out
    assert "Traceback" not in out
    if db.value("SELECT to_regclass('public.alembic_version')") is not None:
        assert db.value("SELECT count(*) FROM public.alembic_version") == 0
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                    "AND NOT tgisinternal") == 0
    after = db.sql("SELECT table_name, column_name, data_type FROM information_schema.columns "
                   "WHERE table_schema = 'public' AND table_name <> 'alembic_version' ORDER BY 1, 2")
    assert after == [r for r in before if r[0] != "alembic_version"]
