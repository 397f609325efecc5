"""The verification script (``ghostsync verify-sql``, ``supabase/verify-trigger.sql``) agrees with
``ghostsync status --json``: one row, the same keys, the same values, the same verdict.

Each case breaks a database the way the status checks know, then reads it both ways:
``status.collect`` (what ``status --json`` prints) and the script, run as the ``postgres``
role the SQL editor uses. Compared exactly: every key, except the cumulative statistics in
``counters`` (``failed_profile_writes``, ``auth_users_inserted``, ``auth_users_deleted``,
``profiles_inserted``, ``trigger_calls``, ``trigger_seconds``): the server's statistics of other sessions reach
``pg_stat_*`` asynchronously, so two reads a moment apart may differ; those are compared as
"the later read is not smaller".
"""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg2
import psycopg2.extras
import pytest
from sqlalchemy import create_engine

from ghostsync import roads, status, verify
from ghostsync.testing.fixtures import SupabaseDatabase
from ghostsync.testing.supabase import (
    APP_PROFILES_FK_WITHOUT_CASCADE_SQL,
    APP_PROFILES_WITHOUT_FK_SQL,
    APP_STARTER_SQL,
)
from ghostsync.urls import normalize
from tests.seeding import seed_app_with_profiles, seed_ghosts

SCRIPT = verify.script()
MONOTONIC = ("failed_profile_writes", "auth_users_inserted", "auth_users_deleted", "profiles_inserted",
             "trigger_calls", "trigger_seconds")


def run_script(db: SupabaseDatabase, sql: str = SCRIPT, user: str = "postgres") -> dict:
    conn = psycopg2.connect(db.url(user))
    try:
        conn.autocommit = True
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql)
            rows = cur.fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, "one row"
    return dict(rows[0])


def collect(db: SupabaseDatabase) -> dict:
    engine = create_engine(normalize(db.url()))
    try:
        with engine.connect() as conn:
            try:
                found = status.collect(conn, road=roads.SUPABASE_CLI)  # the script's road
            except status.StatusError as exc:
                return status.failure_dict(exc.code, str(exc))
    finally:
        engine.dispose()
    return json.loads(json.dumps(found.as_dict()))


def agree(db: SupabaseDatabase) -> dict:
    """Status, then the script; assert they agree; return status's dict."""
    expected = collect(db)
    row = run_script(db)
    assert list(row) == list(verify.COLUMNS)
    if not expected["up"]:
        assert {k: row[k] for k in expected} == expected
        assert all(row[k] is None for k in row if k not in expected)
        return expected
    assert set(row) == set(expected)
    for key in MONOTONIC:
        before, after = expected["counters"].pop(key), row["counters"].pop(key)
        assert (before is None) == (after is None), key
        assert before is None or after >= before, key
    for key in expected:
        assert row[key] == expected[key], key
    return expected


@pytest.fixture
def head(db):
    seed_ghosts(db)
    db.upgrade()
    return db


def codes(found: dict, kind: str = "problems") -> list[str]:
    return [f["code"] for f in found[kind]]


def test_healthy(head):
    found = agree(head)
    assert found["healthy"] is True and found["problems"] == [] and found["revision"] == found["head"]
    assert found["jobs"]["backfill_ghost_users"]["records_affected"] == 5


def test_cannot_check(db):
    assert agree(db)["error"]["code"] == "not_installed"
    db.upgrade()
    db.sql("UPDATE public.alembic_version SET version_num = 'ghostsync_9999'")
    assert agree(db)["error"]["code"] == "revision_unknown"
    db.sql("UPDATE public.alembic_version SET version_num = 'ghostsync_0009'")
    db.sql("INSERT INTO public.alembic_version VALUES ('ghostsync_0008')")
    assert "holds 2 rows" in agree(db)["error"]["message"]


def _edit(db: SupabaseDatabase, signature: str, comment: str) -> None:
    source = db.value("SELECT pg_get_functiondef(%s::regprocedure)", (signature,))
    db.sql(source.replace("BEGIN\n", f"BEGIN\n  -- {comment}\n", 1), user="postgres")


BREAKAGES = {
    "ghost": ("SET session_replication_role = replica; INSERT INTO auth.users (id, email, created_at) "
              "VALUES (gen_random_uuid(), 'g@example.com', now())", ["ghosts"]),
    "orphan": ("SET session_replication_role = replica; INSERT INTO public.users (id, email) "
               "VALUES (gen_random_uuid(), 'o@example.com')", ["orphans"]),
    "failed sync": ("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message, failures) "
                    "VALUES (gen_random_uuid(), 'INSERT', '23505', 'boom', 3)", ["failed_syncs"]),
    "failed sync healed since": ("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) "
                                 "SELECT id, 'UPDATE', '57014', 'canceled' FROM auth.users LIMIT 1", []),
    "stale": ("SET session_replication_role = replica; UPDATE auth.users SET email = 'changed@example.com' "
              "WHERE id = (SELECT id FROM auth.users WHERE email IS NOT NULL ORDER BY id LIMIT 1)",
              ["stale_profiles"]),
    "trigger missing": ("DROP TRIGGER ghostsync_on_auth_user_created ON auth.users", ["trigger_missing"]),
    "trigger disabled": ("ALTER TABLE auth.users DISABLE TRIGGER ghostsync_on_auth_user_updated",
                         ["trigger_disabled"]),
    "trigger replica-only": ("ALTER TABLE auth.users ENABLE REPLICA TRIGGER ghostsync_on_auth_user_deleted",
                             ["trigger_replica_only"]),
    "trigger redefined": ("DROP TRIGGER ghostsync_on_auth_user_updated ON auth.users; "
                          "CREATE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE ON auth.users "
                          "FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_user_updated()", ["trigger_drift"]),
    "trigger not ghostsync's": ("DELETE FROM ghostsync.objects WHERE name LIKE 'ghostsync_on_auth_user_created %'",
                                ["trigger_not_ghostsyncs"]),
    "function edited": (lambda db: _edit(db, "ghostsync.handle_new_user()", "edited in the SQL editor"),
                        ["function_drift"]),
    "function executable by anon": ("GRANT EXECUTE ON FUNCTION ghostsync.handle_user_deleted() TO anon",
                                    ["function_drift"]),
    "function executable by PUBLIC and authenticated": (
        "GRANT EXECUTE ON FUNCTION ghostsync.handle_new_user() TO PUBLIC, authenticated", ["function_drift"]),
    "function owner changed": ("ALTER FUNCTION ghostsync.handle_users_deleted() OWNER TO supabase_admin",
                               ["function_drift"]),
    "function not SECURITY DEFINER, path unpinned": (
        "ALTER FUNCTION ghostsync.handle_user_updated() SECURITY INVOKER RESET search_path", ["function_drift"]),
    "function missing": ("DROP FUNCTION ghostsync.handle_users_deleted() CASCADE",
                         ["trigger_missing", "function_missing"]),
    "rls off on the audit log": ("ALTER TABLE public.cleanup_audit_log DISABLE ROW LEVEL SECURITY",
                                 ["rls_disabled"]),
    "open privileges": ("GRANT TRUNCATE ON public.users TO authenticated; GRANT SELECT ON public.cleanup_audit_log "
                        "TO anon; GRANT USAGE ON SEQUENCE public.cleanup_audit_log_id_seq TO authenticated; "
                        "GRANT SELECT ON ghostsync.sync_failures TO authenticated",
                        ["open_privileges", "open_privileges"]),
    "auth role in replica mode in this database": (
        lambda db: db.sql(f"ALTER ROLE supabase_auth_admin IN DATABASE {db.name} SET session_replication_role = "
                          "replica"), ["auth_writes_skip_triggers"]),
    "database in replica mode": (lambda db: db.sql(f"ALTER DATABASE {db.name} SET session_replication_role = "
                                                   "replica"), ["auth_writes_skip_triggers"]),
    "function's TimeZone reset": ("ALTER FUNCTION ghostsync.write_profile(uuid,boolean) RESET TimeZone",
                                  ["function_drift"]),
    "function made STABLE and STRICT": ("ALTER FUNCTION ghostsync.handle_new_user() STABLE STRICT",
                                        ["function_drift"]),
    "stamped back": ("UPDATE public.alembic_version SET version_num = 'ghostsync_0006'",
                     ["stamped_behind", "trigger_drift", "function_drift"]),
    "column too narrow": ("ALTER TABLE public.users ALTER COLUMN email TYPE varchar(100)",
                          ["profile_table_incompatible"]),
    "stamped back to 0007": ("UPDATE public.alembic_version SET version_num = 'ghostsync_0007'",
                             ["stamped_behind", "trigger_drift", "trigger_drift", "trigger_drift",
                              "function_drift", "function_drift", "function_drift"]),
    "job failed": ("INSERT INTO public.cleanup_audit_log (job_name, status, records_affected) "
                   "VALUES ('resync_profiles', 'failed', 0)", []),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_unhealthy(head, breakage):
    change, expected = BREAKAGES[breakage]
    if callable(change):
        change(head)
    else:
        head.sql(change)
    found = agree(head)
    assert codes(found) == expected, repr(codes(found))
    assert found["healthy"] is (not expected)


def test_auth_role_in_replica_mode(head):
    """A role's setting is the server's, not the database's: set for this test only."""
    head.sql("ALTER ROLE supabase_auth_admin SET session_replication_role = replica")
    try:
        found = agree(head)
    finally:
        head.sql("ALTER ROLE supabase_auth_admin RESET session_replication_role")
    assert codes(found) == ["auth_writes_skip_triggers"]
    assert "ALTER ROLE supabase_auth_admin RESET session_replication_role" in found["problems"][0]["message"]


def test_the_profile_table_opened_by_the_app_warns(head):
    """Supabase's starter: a "viewable by everyone" policy and SELECT for anon; an identity column whose
    sequence the default privileges open. The app's decision: warnings naming the synced columns."""
    head.sql("""CREATE POLICY "Public profiles are viewable by everyone" ON public.users FOR SELECT USING (true);
                GRANT SELECT ON public.users TO anon, authenticated;
                ALTER TABLE public.users ADD COLUMN handle text, ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;
                GRANT USAGE ON SEQUENCE public.users_n_seq TO anon""")
    found = agree(head)
    assert found["healthy"] and codes(found) == []
    assert codes(found, "warnings") == ["open_privileges", "synced_columns_readable"]
    readable = found["warnings"][1]["message"]
    assert "anon, authenticated read every row's" in readable and "email" in readable
    assert "REVOKE SELECT ON public.users FROM anon; GRANT SELECT (id, handle, n) ON public.users TO anon;" in readable


def test_warnings(head):
    head.sql("INSERT INTO public.cleanup_audit_log (job_name, status, records_affected) "
             "VALUES ('backfill_ghost_users', 'interrupted', 3)")
    found = agree(head)
    assert codes(found, "warnings") == ["job_interrupted"] and found["healthy"]


def test_behind_head_with_matching_objects_is_healthy(db):
    seed_ghosts(db)
    db.upgrade("ghostsync_0006")
    found = agree(db)
    assert found["healthy"] is True and codes(found, "warnings") == ["behind_head"]
    assert found["revision"] == "ghostsync_0006" and found["at_head"] is False


@pytest.mark.parametrize("revision", ["ghostsync_0001", "ghostsync_0003", "ghostsync_0005"])
def test_early_revisions(db, revision):
    """Tables and columns a later revision adds are read only where they exist."""
    seed_ghosts(db)
    db.upgrade(revision)
    db.sql("SET session_replication_role = replica; UPDATE auth.users SET email = 'x@example.com' "
           "WHERE id = (SELECT id FROM auth.users WHERE email IS NOT NULL ORDER BY id LIMIT 1)")
    found = agree(db)
    assert found["revision"] == revision


def test_adopted_table(db):
    seed_app_with_profiles(db, 2)
    seed_ghosts(db)
    db.upgrade()
    db.sql("ALTER TABLE public.users DISABLE ROW LEVEL SECURITY")
    found = agree(db)
    assert found["healthy"] and {"rls_disabled", "open_privileges"} <= set(codes(found, "warnings"))


def test_not_installed_on_the_apps_table(db):
    seed_app_with_profiles(db, 1)
    found = agree(db)
    assert found["error"]["code"] == "not_installed" and found["healthy"] is False


def test_read_only_and_the_search_path_left_as_it_was(head):
    conn = psycopg2.connect(head.url())
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN READ ONLY")
            cur.execute("SET LOCAL search_path = auth, public")
            cur.execute(SCRIPT)
            assert cur.fetchone()[3] is True
            cur.execute("SHOW search_path")
            assert cur.fetchone()[0] == "auth, public"
        conn.rollback()
    finally:
        conn.close()


def test_command_line_prints_the_exported_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ghostsync", "verify-sql"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SCRIPT
    from ghostsync.export import export_supabase

    export_supabase(tmp_path / "supabase" / "migrations")
    assert (tmp_path / "supabase" / "verify-trigger.sql").read_text() == SCRIPT


# Issue 18's findings, rendered from the catalogue by both: an adopted table's shapes.
APP_SHAPES = {
    "an app trigger writes profiles": (
        APP_STARTER_SQL, "", ["app_trigger_writes_profiles"], []),
    "the app's key refuses deletes": (
        APP_PROFILES_FK_WITHOUT_CASCADE_SQL, "", ["app_key_refuses_deletes"], []),
    "the app's rows kept": (
        APP_PROFILES_WITHOUT_FK_SQL, "SET session_replication_role = replica; DELETE FROM auth.users "
        "WHERE id IN (SELECT id FROM auth.users ORDER BY id LIMIT 2)", ["app_rows_kept"], []),
    "an app key checked before the profile": (
        "SELECT 1", "CREATE TABLE public.user_settings (user_id uuid PRIMARY KEY REFERENCES public.users (id), "
        "theme text); CREATE FUNCTION public.app_settings() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO user_settings (user_id, theme) VALUES (new.id, 'dark'); RETURN new; END $$; "
        "CREATE TRIGGER app_settings AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.app_settings()",
        [], ["app_key_checked_before_profile"]),
    "a profile that cannot be created": (
        APP_PROFILES_WITHOUT_FK_SQL, "ALTER TABLE public.users ADD COLUMN username text; "
        "ALTER TABLE public.users ADD CONSTRAINT named CHECK (username IS NOT NULL) NOT VALID; "
        "INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at) VALUES "
        "('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', "
        "'nameless@example.com', now(), now())", [], ["ghosts", "failed_syncs", "profile_cannot_be_created"]),
}


@pytest.mark.parametrize("shape", list(APP_SHAPES))
def test_an_adopted_tables_findings_agree(db, shape):
    app, change, warnings, problems = APP_SHAPES[shape]
    db.sql(app, user="postgres")
    seed_ghosts(db)
    db.upgrade()
    if change:
        db.sql(change)
    found = agree(db)
    assert set(warnings) <= set(codes(found, "warnings")), found["warnings"]
    assert codes(found) == problems, found["problems"]
