"""The throwaway database reproduces the facts of shared/SUPABASE.md that ghostsync depends on."""

from __future__ import annotations

import psycopg2
import pytest


def test_roles_are_supabase_like(db):
    roles = dict(
        (r[0], r[1:])
        for r in db.sql(
            "SELECT rolname, rolsuper, rolinherit, rolcanlogin, rolcreaterole, rolbypassrls FROM pg_roles "
            "WHERE rolname IN ('postgres','supabase_admin','supabase_auth_admin','anon','authenticated',"
            "'service_role','authenticator')"
        )
    )
    assert roles["supabase_admin"][0] is True
    assert roles["postgres"][0] is False, "migrations must run as a non-superuser postgres"
    assert roles["supabase_auth_admin"] == (False, False, True, True, False)
    assert roles["anon"] == (False, False, False, False, False)
    assert roles["authenticated"] == (False, False, False, False, False)
    assert roles["service_role"] == (False, False, False, False, True)
    assert roles["authenticator"][1:3] == (False, True)
    assert db.value("SELECT pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER')") is True
    config = db.value("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                      "WHERE r.rolname = 'supabase_auth_admin'")
    assert config == ["search_path=auth"]


def test_auth_schema_ownership_and_rls(db):
    assert db.value("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'auth'") == "supabase_admin"
    owner, rls = db.sql("SELECT relowner::regrole::text, relrowsecurity FROM pg_class "
                        "WHERE oid = 'auth.users'::regclass")[0]
    assert (owner, rls) == ("supabase_auth_admin", True)
    generated = db.value("SELECT attgenerated FROM pg_attribute WHERE attrelid = 'auth.users'::regclass "
                         "AND attname = 'confirmed_at'")
    assert generated == "s"


def test_auth_service_writes_as_its_own_role_through_its_search_path(db):
    with db.auth() as auth:
        assert auth.conn.get_dsn_parameters()["user"] == "supabase_auth_admin"
        uid = auth.signup(email="a@example.com")
        with auth.conn.cursor() as cur:
            cur.execute("SELECT current_user, current_setting('search_path')")
            assert cur.fetchone() == ("supabase_auth_admin", "auth")
        auth.conn.rollback()
    assert db.value("SELECT role FROM auth.users WHERE id = %s", (str(uid),)) == "authenticated"


def test_email_unique_only_among_non_sso_users(db):
    with db.auth() as auth:
        auth.signup(email="shared@example.com")
        auth.signup(email="shared@example.com", sso=True)
        with pytest.raises(psycopg2.errors.UniqueViolation):
            auth.signup(email="shared@example.com")


def test_public_default_privileges_open_new_tables_to_api_roles(db):
    db.sql("CREATE TABLE public.probe (x int)", user="postgres")
    assert db.value("SELECT has_table_privilege('anon', 'public.probe', 'SELECT')") is True
