"""The throwaway database reproduces the facts of the upstream sources (supabase/postgres, supabase/auth, supautils)
in each of its three role setups: "membership" (older projects), "current" (today's roles without
supautils) and "hosted" (today's roles with the supautils model; the default)."""

from __future__ import annotations

import json

import psycopg2
import pytest

from ghostsync.testing.fixtures import supabase_database
from ghostsync.testing.supabase import AUTH_TABLES, DROP_TRIGGER_GRANTS, ROLE_SETUPS

FOUR_TABLES = ("audit_log_entries", "identities", "sessions", "refresh_tokens")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture(params=ROLE_SETUPS)
def setup_db(request, supabase_pg_major, supabase_servers):
    """A fresh database on this version's server of each role setup."""
    with supabase_database(supabase_servers.get(supabase_pg_major, request.param)) as database:
        yield database


def connect(db, user):
    conn = psycopg2.connect(db.url(user))
    conn.autocommit = True
    return conn


def role_config(db, role):
    rows = db.sql("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                  "WHERE r.rolname = %s AND s.setdatabase = 0", (role,))
    return sorted(rows[0][0]) if rows else []


def test_default_server_is_hosted(pg, db):
    assert pg.roles == "hosted"
    assert db.owner.roles == "hosted"


def test_role_attributes(setup_db):
    db = setup_db
    roles = {
        r[0]: r[1:]
        for r in db.sql(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname IN ('postgres','supabase_admin','supabase_auth_admin',"
            "'anon','authenticated','service_role','authenticator')"
        )
    }
    #                              super  inherit createrole createdb login  repl   bypassrls
    assert roles["supabase_admin"][0] is True
    assert roles["postgres"] == (False, True, True, True, True, True, True)
    createrole = db.owner.roles == "membership"  # NOCREATEROLE since 20260821154147
    assert roles["supabase_auth_admin"] == (False, False, createrole, False, True, False, False)
    assert roles["anon"] == (False, True, False, False, False, False, False)
    assert roles["authenticated"] == (False, True, False, False, False, False, False)
    assert roles["service_role"] == (False, True, False, False, False, False, True)
    assert roles["authenticator"] == (False, False, False, False, True, False, False)


def test_memberships(setup_db):
    db = setup_db
    for api_role in ("anon", "authenticated", "service_role"):
        assert db.value("SELECT pg_has_role('authenticator', %s, 'MEMBER')", (api_role,)) is True
        assert db.value("SELECT pg_has_role('postgres', %s, 'MEMBER')", (api_role,)) is True
    member = db.value("SELECT pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER')")
    assert member is (db.owner.roles == "membership")
    assert db.value("SELECT pg_has_role('postgres', 'supabase_admin', 'MEMBER')") is False
    assert db.value("SELECT pg_has_role('postgres', 'pg_read_all_data', 'MEMBER')") is True


def test_search_paths_and_timeouts(setup_db):
    db = setup_db
    assert role_config(db, "postgres") == ['search_path="$user", public, extensions']
    assert role_config(db, "supabase_auth_admin") == ["idle_in_transaction_session_timeout=60000",
                                                      "search_path=auth"]
    assert role_config(db, "anon") == ["statement_timeout=3s"]
    assert role_config(db, "authenticated") == ["statement_timeout=8s"]
    assert role_config(db, "authenticator") == ["lock_timeout=8s", "statement_timeout=8s"]
    for user, setting, expected in (
        ("postgres", "search_path", '"$user", public, extensions'),
        ("supabase_auth_admin", "search_path", "auth"),
        ("supabase_auth_admin", "idle_in_transaction_session_timeout", "1min"),
    ):
        conn = connect(db, user)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW {setting}")
                assert cur.fetchone()[0] == expected
        finally:
            conn.close()


def test_schemas_ownership_rls_and_grants(setup_db):
    db = setup_db
    assert db.value("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'auth'") == "supabase_admin"
    assert db.value("SELECT count(*) FROM pg_namespace WHERE nspname = 'extensions'") == 1
    assert db.value("SELECT has_schema_privilege('postgres', 'auth', 'USAGE')") is True
    create = db.value("SELECT has_schema_privilege('postgres', 'auth', 'CREATE')")
    assert create is (db.owner.roles == "membership")
    for table in AUTH_TABLES:
        owner, rls = db.sql("SELECT relowner::regrole::text, relrowsecurity FROM pg_class "
                            "WHERE oid = %s::regclass", (f"auth.{table}",))[0]
        assert (table, owner, rls) == (table, "supabase_auth_admin", True)
    for table in (*FOUR_TABLES, "users"):
        for privilege in TABLE_PRIVILEGES:
            assert db.value("SELECT has_table_privilege('postgres', %s, %s)", (f"auth.{table}", privilege)), \
                (table, privilege)
        assert db.value("SELECT has_table_privilege('postgres', %s, 'SELECT WITH GRANT OPTION')",
                        (f"auth.{table}",)) is True
    # revoked in 20250421084701 (pg_read_all_data still lets postgres read it)
    granted = db.value("SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a "
                       "WHERE c.oid = 'auth.schema_migrations'::regclass AND a.grantee = 'postgres'::regrole")
    assert (granted > 0) is (db.owner.roles == "membership")
    generated = db.value("SELECT attgenerated FROM pg_attribute WHERE attrelid = 'auth.users'::regclass "
                         "AND attname = 'confirmed_at'")
    assert generated == "s"


def test_auth_tables_keys_and_cascades(setup_db):
    db = setup_db
    fks = {
        (r[0], r[1]): (r[2], r[3])
        for r in db.sql(
            "SELECT conrelid::regclass::text, conname, confrelid::regclass::text, confdeltype FROM pg_constraint "
            "WHERE contype = 'f' AND connamespace = 'auth'::regnamespace"
        )
    }
    assert fks[("auth.identities", "identities_user_id_fkey")] == ("auth.users", "c")
    assert fks[("auth.sessions", "sessions_user_id_fkey")] == ("auth.users", "c")
    assert fks[("auth.refresh_tokens", "refresh_tokens_session_id_fkey")] == ("auth.sessions", "c")
    assert fks[("auth.mfa_amr_claims", "mfa_amr_claims_session_id_fkey")] == ("auth.sessions", "c")
    assert ("auth.one_time_tokens", "one_time_tokens_user_id_fkey") in fks
    assert not any(table == "auth.audit_log_entries" for table, _ in fks)  # audit rows outlive their user
    # refresh_tokens.user_id is varchar(255) with no foreign key (00_init_auth_schema)
    assert db.value("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'auth.refresh_tokens'::regclass AND attname = 'user_id'") == \
        "character varying(255)"
    assert db.value("SELECT attgenerated FROM pg_attribute WHERE attrelid = 'auth.identities'::regclass "
                    "AND attname = 'email'") == "s"
    keys = dict(db.sql("SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE contype = 'p' AND connamespace = 'auth'::regnamespace"))
    assert keys["auth.identities"] == "PRIMARY KEY (id)"
    assert keys["auth.refresh_tokens"] == "PRIMARY KEY (id)"
    assert keys["auth.mfa_amr_claims"] == "PRIMARY KEY (id)"
    assert db.value("SELECT count(*) FROM pg_indexes WHERE schemaname = 'auth' AND indexname = "
                    "'users_email_partial_key' AND indexdef LIKE '%%WHERE (is_sso_user = false)%%'") == 1


def test_public_default_privileges_open_new_objects_to_api_roles(setup_db):
    db = setup_db
    db.sql("CREATE TABLE public.probe (x serial)", user="postgres")
    db.sql("CREATE FUNCTION public.probe_f() RETURNS int LANGUAGE sql AS 'SELECT 1'", user="postgres")
    db.sql("CREATE TABLE public.admin_probe (x int)")  # as supabase_admin
    for role in ("anon", "authenticated", "service_role"):
        for table in ("public.probe", "public.admin_probe"):
            for privilege in TABLE_PRIVILEGES:
                assert db.value("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)), \
                    (role, table, privilege)
        assert db.value("SELECT has_sequence_privilege(%s, 'public.probe_x_seq', 'USAGE')", (role,)) is True
        assert db.value("SELECT has_function_privilege(%s, 'public.probe_f()', 'EXECUTE')", (role,)) is True
    defaults = {r[0] for r in db.sql("SELECT defaclrole::regrole::text FROM pg_default_acl "
                                     "WHERE defaclnamespace = 'public'::regnamespace")}
    assert defaults == {"postgres", "supabase_admin"}


def test_trigger_privileges_per_setup(setup_db):
    """CREATE TRIGGER on auth.users works as postgres everywhere (TRIGGER privilege); DROP TRIGGER works
    through membership, fails with PostgreSQL's own error without it, and works through supautils."""
    db = setup_db
    db.sql("CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
           user="postgres")
    db.sql("CREATE TRIGGER probe AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.noop()",
           user="postgres")
    if db.owner.roles == "current":
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="must be owner of relation users") as err:
            db.sql("DROP TRIGGER probe ON auth.users", user="postgres")
        assert err.value.pgcode == "42501"
        assert db.value("SELECT count(*) FROM pg_trigger WHERE tgname = 'probe'") == 1
    else:
        db.sql("DROP TRIGGER probe ON auth.users", user="postgres")
        assert db.value("SELECT count(*) FROM pg_trigger WHERE tgname = 'probe'") == 0
    # what needs ownership stays closed without membership, supautils or not
    if db.owner.roles != "membership":
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="must be owner"):
            db.sql("ALTER TABLE auth.users DISABLE TRIGGER USER", user="postgres")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            db.sql("CREATE TABLE auth.mine (x int)", user="postgres")


def test_supautils_model_only_on_hosted(setup_db):
    db = setup_db
    triggers = {r[0] for r in db.sql("SELECT evtname FROM pg_event_trigger")}
    grants = db.value("SELECT current_setting('supautils.drop_trigger_grants', true)")
    if db.owner.roles == "hosted":
        assert triggers == {"supautils_drop_trigger_grants", "supautils_drop_trigger_grants_end"}
        assert db.sql("SELECT evtevent, evtowner::regrole::text, evttags FROM pg_event_trigger ORDER BY evtname") == [
            ("ddl_command_start", "supabase_admin", ["DROP TRIGGER"]),
            ("ddl_command_end", "supabase_admin", ["DROP TRIGGER"]),
        ]
        assert json.loads(grants) == DROP_TRIGGER_GRANTS
        assert json.loads(grants)["postgres"][:5] == ["auth.audit_log_entries", "auth.identities",
                                                      "auth.refresh_tokens", "auth.sessions", "auth.users"]
    else:
        assert triggers == set()
        assert grants in (None, "")


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
