"""Security, read from the catalogs the way Supabase's database linter reads them."""

from __future__ import annotations

import re

import psycopg2
import pytest

from ghostsync import chain

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
OWN_TABLES = ("public.cleanup_audit_log", "ghostsync.sync_failures", "public.alembic_version")
API_ROLES = ("anon", "authenticated")
RELATION_AFTER = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+([A-Za-z_][\w.\"]*)", re.IGNORECASE)
CALL = re.compile(r"(?<!AS )\b([A-Za-z_][\w.]*)\s*\(")
NOT_CALLS = {"coalesce", "values", "exists", "in", "and", "or", "not", "if", "when", "then", "into", "on",
             "conflict", "returning", "raise", "set", "select", "from"}  # FROM (subquery)
# Names PL/pgSQL itself resolves, never through the search path.
PLPGSQL_NAMES = {"deferred_users", "deleted_users"}
PROFILE_WRITERS = {"ghostsync.write_profile(uuid,boolean)", "ghostsync.handle_new_user()",
                   "ghostsync.handle_user_updated()"}


@pytest.fixture
def head(db):
    db.upgrade()
    return db


def ghostsync_functions(db):
    signatures = list(chain.declared_at(chain.head(chain.script_directory())).functions)
    return db.sql(
        "SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig, p.prosrc FROM pg_proc p "
        "WHERE p.oid = ANY (%s::regprocedure[])",
        (signatures,),
    )


def test_every_function_pins_search_path_and_names_only_qualified_objects(head):
    functions = ghostsync_functions(head)
    assert len(functions) == 5
    for signature, secdef, config, source in functions:
        source = re.sub(r"--[^\n]*", "", source)  # comments name nothing (none of ours holds a quote)
        source = re.sub(r"'(?:[^']|'')*'", "''", source)  # nor do string literals
        assert secdef is True, signature
        # the profile writers also pin TimeZone (a timestamp without time zone column is written as UTC)
        writes_profiles = signature in PROFILE_WRITERS
        assert config == ['search_path=""', *(["TimeZone=UTC"] if writes_profiles else [])], signature
        for name in RELATION_AFTER.findall(source):
            if name.upper() == "SET" or name in PLPGSQL_NAMES:  # ON CONFLICT ... DO UPDATE SET; transition table
                continue
            assert "." in name, f"{signature}: unqualified relation {name}"
        for name in CALL.findall(source):
            if name.lower() not in NOT_CALLS:
                assert "." in name, f"{signature}: unqualified call {name}()"


def test_no_security_definer_function_is_executable_by_api_roles(head):
    for signature, *_ in ghostsync_functions(head):
        for role in ("public", *API_ROLES):
            if role == "public":
                acl = head.value("SELECT proacl::text FROM pg_proc WHERE oid = %s::regprocedure", (signature,))
                assert not re.search(r"(^\{|,)=\w*X", acl), f"{signature} executable by PUBLIC: {acl}"
            else:
                assert head.value("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, signature)) is False


def test_own_tables_are_closed_to_api_roles(head):
    for table in (*OWN_TABLES, "ghostsync.objects"):
        for role in API_ROLES:
            for privilege in PRIVILEGES:
                allowed = head.value("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege))
                assert allowed is False, f"{role} has {privilege} on {table}"
    assert head.value("SELECT has_schema_privilege('anon', 'ghostsync', 'USAGE')") is False
    # the audit log's identity sequence: USAGE or UPDATE would let an end user setval it
    sequence = head.value("SELECT pg_get_serial_sequence('public.cleanup_audit_log', 'id')")
    for role in API_ROLES:
        for privilege in ("USAGE", "SELECT", "UPDATE"):
            assert head.value("SELECT has_sequence_privilege(%s, %s, %s)", (role, sequence, privilege)) is False


def test_profiles_ghostsync_creates_are_closed_where_rls_cannot_guard(head):
    # RLS governs neither TRUNCATE, REFERENCES nor TRIGGER; anon has no business with profiles at all
    # (with pg_graphql it would make the table discoverable: Supabase's lint 0026).
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
        assert head.value("SELECT has_table_privilege('anon', 'public.users', %s)", (privilege,)) is False
    for privilege in ("TRUNCATE", "REFERENCES", "TRIGGER"):
        assert head.value("SELECT has_table_privilege('authenticated', 'public.users', %s)", (privilege,)) is False
    # signed-in access stays the app's decision, through its own policies
    assert head.value("SELECT has_table_privilege('authenticated', 'public.users', 'SELECT')") is True
    assert head.value("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.users'::regclass") is True
    conn = psycopg2.connect(head.url("supabase_admin"))
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE authenticated")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("SELECT * FROM public.cleanup_audit_log")
    finally:
        conn.close()


def test_ghostsync_created_profiles_have_rls_and_adopted_ones_without_warn(db):
    db.upgrade()
    assert db.value("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.users'::regclass") is True
    assert db.value("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.cleanup_audit_log'::regclass") is True


def test_adopted_profiles_without_rls_or_with_open_privileges_make_status_warn(db):
    from tests.seeding import ghostsync_cli

    db.sql("CREATE TABLE public.users (id uuid PRIMARY KEY, email text, email_verified boolean NOT NULL DEFAULT "
           "false, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())",
           user="postgres")
    db.upgrade()
    proc = ghostsync_cli(db, "status")
    assert "warning [rls_disabled]: public.users has row level security disabled" in proc.stdout
    assert "warning [open_privileges]: public.users grants" in proc.stdout
    assert proc.returncode == 0, "a warning is not a failure"


def test_planted_objects_on_the_writers_search_path_change_nothing(head):
    head.sql("""
        CREATE SCHEMA evil;
        CREATE TABLE evil.users (LIKE auth.users);
        ALTER TABLE evil.users ALTER COLUMN id DROP NOT NULL;
        CREATE TABLE evil.sync_failures (user_id uuid, operation text, sqlstate text, message text);
        CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '1999-01-01'::timestamptz $$;
        CREATE FUNCTION evil.coalesce(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE sql
          AS $$ SELECT '1999-01-01'::timestamptz $$;
        GRANT USAGE ON SCHEMA evil TO PUBLIC;
        GRANT ALL ON ALL TABLES IN SCHEMA evil TO PUBLIC;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA evil TO PUBLIC;
    """)
    options = "-c search_path=evil,pg_catalog,public,auth"
    with head.auth(table="auth.users", options=options) as auth:
        uid = auth.signup(email="safe@example.com")
        auth.confirm_email(uid)
        auth.change_email(uid, "safe2@example.com")
    assert head.value("SELECT count(*) FROM evil.users") == 0
    assert head.value("SELECT count(*) FROM evil.sync_failures") == 0
    email, verified, updated = head.sql("SELECT email, email_verified, updated_at FROM public.users "
                                        "WHERE id = %s", (str(uid),))[0]
    assert (email, verified) == ("safe2@example.com", True)
    # on the writer's search path now() is evil.now(); ghostsync's functions used pg_catalog.now()
    conn = psycopg2.connect(head.url("supabase_auth_admin"), options=options)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT extract(year FROM now())")
            assert cur.fetchone()[0] == 1999, "the planted now() is what an unqualified call would get"
    finally:
        conn.close()
    assert updated.year > 2000
