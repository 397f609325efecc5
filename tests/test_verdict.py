"""Issue 20 §1: the verdict tells the truth (status, full and quick; verify-sql agrees in test_verify_sql.py).

- public.users is the app's table whether ghostsync created or adopted it: what the app opens there (Supabase's
  "viewable by everyone" starter, an identity column's sequence opened by default privileges) is a warning that
  names the synced columns it exposes and the column privileges that close them; ghostsync's own tables stay
  closed, and a grant on them stays a problem;
- session_replication_role = replica on the auth role or the database is a problem in both checks;
- a function made STABLE, STRICT or of another language is drift;
- a ledger row whose profile now equals its account is not counted;
- a stamp back to an old revision is a finding of its own.
"""

from __future__ import annotations

import json

import pytest

from tests.seeding import ghostsync_cli, seed_ghosts

STARTER = """
CREATE POLICY "Public profiles are viewable by everyone" ON public.users FOR SELECT USING (true);
GRANT SELECT ON public.users TO anon;
"""


@pytest.fixture
def head(db):
    seed_ghosts(db)
    db.upgrade()
    return db


def verdict(db, *args: str) -> tuple[int, dict]:
    proc = ghostsync_cli(db, "status", "--json", *args)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def codes(data: dict, kind: str = "problems") -> list[str]:
    return [f["code"] for f in data[kind]]


@pytest.mark.parametrize("check", [(), ("--quick",)], ids=["full", "quick"])
def test_the_supabase_starter_on_the_profiles_ghostsync_created_warns(head, check):
    head.sql(STARTER)
    code, data = verdict(head, *check)
    assert code == 0 and data["healthy"], data["problems"]
    assert codes(data, "warnings") == ["open_privileges", "synced_columns_readable"]
    readable = data["warnings"][1]["message"]
    assert readable.startswith("public.users lets anon, authenticated read every row's ")
    assert "email" in readable and '"Public profiles are viewable by everyone"' in readable
    assert "REVOKE SELECT ON public.users FROM anon; GRANT SELECT (id) ON public.users TO anon" in readable


def test_an_identity_columns_sequence_opened_by_default_privileges_warns(head):
    head.sql("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO anon, authenticated; "
             "ALTER TABLE public.users ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY")
    code, data = verdict(head)
    assert code == 0 and codes(data) == [], data["problems"]
    assert codes(data, "warnings") == ["open_privileges"]
    assert "on its sequence to anon" in data["warnings"][0]["message"]


def test_an_own_row_policy_exposes_nothing(head):
    head.sql("CREATE POLICY own ON public.users FOR SELECT TO authenticated USING ((SELECT auth.uid()) = id); "
             "GRANT SELECT ON public.users TO authenticated")
    code, data = verdict(head)
    assert code == 0 and data["problems"] == [] and data["warnings"] == []


@pytest.mark.parametrize("table", ["public.cleanup_audit_log", "ghostsync.sync_failures"])
def test_a_grant_on_ghostsyncs_own_tables_stays_a_problem(head, table):
    head.sql(f"GRANT SELECT ON {table} TO anon")
    code, data = verdict(head)
    assert code == 1 and codes(data) == ["open_privileges"] and table in data["problems"][0]["message"]


@pytest.mark.parametrize("check", [(), ("--quick",)], ids=["full", "quick"])
@pytest.mark.parametrize("scope", ["role", "role in database", "database"])
def test_settings_that_make_the_auth_service_skip_the_triggers(head, scope, check):
    setting = {"role": "ALTER ROLE supabase_auth_admin",
               "role in database": f"ALTER ROLE supabase_auth_admin IN DATABASE {head.name}",
               "database": f"ALTER DATABASE {head.name}"}[scope]
    head.sql(f"{setting} SET session_replication_role = replica")
    try:
        code, data = verdict(head, *check)
        text = ghostsync_cli(head, "status", *check).stdout
    finally:
        head.sql(f"{setting} RESET session_replication_role")
    assert code == 1 and codes(data) == ["auth_writes_skip_triggers"], data["problems"]
    assert f"{setting} RESET session_replication_role" in data["problems"][0]["message"]
    assert "problem [auth_writes_skip_triggers]" in text
    assert verdict(head, *check)[0] == 0, "reset: healthy again"


def test_the_auth_roles_own_setting_wins_over_the_databases(head):
    """PostgreSQL applies the most specific setting: the role's 'origin' overrides the database's 'replica'."""
    head.sql(f"ALTER DATABASE {head.name} SET session_replication_role = replica")
    head.sql(f"ALTER ROLE supabase_auth_admin IN DATABASE {head.name} SET session_replication_role = origin")
    assert verdict(head, "--quick")[0] == 0


@pytest.mark.parametrize("change, words", [
    ("STABLE", "STABLE (declared VOLATILE)"),
    ("STRICT", "STRICT (declared CALLED ON NULL INPUT)"),
])
def test_a_function_made_stable_or_strict_is_drift(head, change, words):
    head.sql(f"ALTER FUNCTION ghostsync.handle_new_user() {change}")
    code, data = verdict(head, "--quick")
    assert code == 1 and codes(data) == ["function_drift"]
    assert words in data["problems"][0]["message"]
    assert data["functions"]["ghostsync.handle_new_user()"]["differences"] == [words]


def test_a_function_of_another_language_is_drift(head):
    body = head.value("SELECT prosrc FROM pg_proc WHERE oid = 'ghostsync.handle_users_deleted()'::regprocedure")
    head.sql("CREATE OR REPLACE FUNCTION ghostsync.handle_users_deleted() RETURNS trigger LANGUAGE plpgsql "
             "SECURITY DEFINER SET search_path = '' AS $f$" + body + "$f$")
    assert verdict(head)[0] == 0, "the same function again matches"
    head.sql("UPDATE pg_catalog.pg_proc SET prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql') "
             "WHERE oid = 'ghostsync.handle_users_deleted()'::regprocedure")
    code, data = verdict(head, "--quick")
    assert code == 1 and "LANGUAGE sql (declared plpgsql)" in data["problems"][0]["message"]


def test_a_ledger_row_whose_profile_healed_is_not_counted(head):
    healed, stale = (r[0] for r in head.sql("SELECT id::text FROM auth.users ORDER BY id LIMIT 2"))
    head.sql("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) VALUES "
             "(%s, 'UPDATE', '57014', 'canceled'), (%s, 'UPDATE', '57014', 'canceled')", (healed, stale))
    head.sql("SET session_replication_role = replica; UPDATE public.users SET email = 'old@example.com' "
             "WHERE id = %s", (stale,))
    for check in ((), ("--quick",)):
        code, data = verdict(head, *check)
        assert code == 1 and data["failed_syncs"] == 1, (check, data["problems"])
    head.sql("UPDATE auth.users SET email = 'old@example.com' WHERE id = %s", (stale,))  # the sync heals it
    code, data = verdict(head, "--quick")
    assert code == 0 and data["failed_syncs"] == 0, data["problems"]
    assert head.value("SELECT count(*) FROM ghostsync.sync_failures") == 2, "status writes nothing"


def test_a_stamp_back_to_an_old_revision_is_named(head):
    head.sql("UPDATE public.alembic_version SET version_num = 'ghostsync_0006'")
    code, data = verdict(head, "--quick")
    assert code == 1 and codes(data)[0] == "stamped_behind", data["problems"]
    message = data["problems"][0]["message"]
    assert message.startswith("the database holds what revision ghostsync_0011 declares (function "), message
    assert "alembic_version says ghostsync_0006" in message


def test_a_downgrade_is_no_stamp(head):
    head.downgrade("ghostsync_0006")
    code, data = verdict(head)
    assert code == 0 and codes(data, "warnings") == ["behind_head"], data
