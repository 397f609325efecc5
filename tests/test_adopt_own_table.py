"""Issue 18 §1 and §3: an app's own public.users is adopted as it is; what cannot be adopted is refused clearly.

Missing synced columns are added to a private table and recorded as ghostsync's; a table other users can
read gets none, and ghostsync syncs what it has. A profile ghostsync cannot create is recorded with its cause,
named by status, and never lets backfill or repair report success. A timestamp without time zone is written
and compared as UTC; a NULL id row is nobody's ghost or orphan.
"""

from __future__ import annotations

import json

import pytest

from ghostsync.testing.supabase import APP_AUTH_ID_COLUMN_SQL, APP_CHAT_SQL, APP_STARTER_SQL, APP_USERS_VIEW_SQL
from tests.seeding import downgrade, ghost_count, ghostsync_cli, seed_ghosts

# issue 18's cases hold on every role setup of Supabase (tests/conftest.py)
ON_EVERY_ROLE_SETUP = True

SYNCED = ("email", "email_verified", "deleted_at", "created_at", "updated_at")
# The app's trigger is not what these tests are about: the shapes' tables, without it.


def without_app_trigger(shape: str) -> str:
    """An app shape's table, policies and grants, without its trigger on auth.users and the trigger's function
    (created, never dropped: on the "current" role setup postgres may create a trigger on auth.users, not drop
    one)."""
    return shape[:shape.index("CREATE FUNCTION public.handle_new_user()")]


def columns(db) -> set[str]:
    return {r[0] for r in db.sql("SELECT attname::text FROM pg_attribute WHERE attrelid = 'public.users'::regclass "
                                 "AND attnum > 0 AND NOT attisdropped")}


def status(db, **env: str) -> dict:
    proc = ghostsync_cli(db, "status", "--json", env_extra=env or None)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def refused(db) -> str:
    proc = db.alembic_cli("upgrade", "head")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal "
                    "AND tgname LIKE 'ghostsync%%'") == 0
    [line] = [ln for ln in out.splitlines() if "ghostsync: " in ln and "FAILED" in ln]
    return line


def test_a_private_table_missing_synced_columns_gets_them_added_and_kept_on_downgrade(db):
    db.sql(without_app_trigger(APP_STARTER_SQL), user="postgres")
    ghosts = seed_ghosts(db)
    proc = db.alembic_cli("upgrade", "head")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "added column(s) email, email_verified, created_at, updated_at" in proc.stdout + proc.stderr
    assert set(SYNCED) <= columns(db)
    assert dict(db.sql("SELECT name, created FROM ghostsync.objects WHERE kind = 'column'")) == {
        f"public.users.{c}": True for c in SYNCED}
    nullable = dict(db.sql("SELECT attname::text, NOT attnotnull FROM pg_attribute WHERE attrelid = "
                           "'public.users'::regclass AND attname = ANY (%s)", (list(SYNCED),)))
    assert nullable == {c: True for c in SYNCED}
    assert ghost_count(db) == 0
    assert db.value("SELECT email FROM public.users WHERE id = %s", (str(ghosts["email_confirmed"]),)) == \
        "ghost.confirmed@example.com"
    assert status(db)["healthy"] is True
    downgrade(db, "base")
    assert set(SYNCED) <= columns(db), "the added columns hold data: kept on downgrade"


def test_a_table_other_users_can_read_gets_no_column_and_status_says_so(db):
    db.sql(without_app_trigger(APP_CHAT_SQL), user="postgres")
    before = columns(db)
    seed_ghosts(db)
    proc = db.alembic_cli("upgrade", "head")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert columns(db) == before, "no column of auth data on a table every signed-in user reads"
    assert "no column added" in out and "email, email_verified, created_at, updated_at" in out
    assert ghost_count(db) == 0, "the ghosts still get their profile (id only)"
    assert db.value("SELECT count(*) FROM ghostsync.objects WHERE kind = 'column'") == 0
    found = status(db)
    assert found["healthy"] is True, found["problems"]
    [absent] = [w for w in found["warnings"] if w["code"] == "synced_columns_absent"]
    assert "no column email, email_verified, created_at, updated_at, deleted_at:" in absent["message"]
    assert "readable by other users" in absent["message"]
    repaired = ghostsync_cli(db, "repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr


def test_a_view_named_public_users_is_refused_in_one_line(db):
    db.sql(APP_USERS_VIEW_SQL, user="postgres")
    line = refused(db)
    assert "public.users is a view, not a table" in line and "nothing was changed" in line
    assert "key" not in line, "a view cannot have a key: none is asked for"
    assert db.value("SELECT relkind::text FROM pg_class WHERE oid = 'public.users'::regclass") == "v"


def test_an_auth_id_kept_in_another_column_is_refused_naming_it(db):
    db.sql(APP_AUTH_ID_COLUMN_SQL, user="postgres")
    line = refused(db)
    assert "column id is bigint (an identity column)" in line and "auth_user_id" in line
    assert "needs uuid" not in line and "TYPE" not in line, "never advise changing an identity column's type"


@pytest.mark.parametrize("auth_id", ["auth_user_id uuid UNIQUE", None])
def test_an_identity_id_without_a_key_to_auth_users_is_refused_without_advising_its_type(db, auth_id):
    """The issue's shape has no foreign key: the uuid column unique on its own is named; with none, the
    line still says the table is keyed otherwise, never "needs uuid"."""
    columns = ", ".join(c for c in ("id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", auth_id, "email text") if c)
    db.sql(f"CREATE TABLE public.users ({columns})", user="postgres")
    line = refused(db)
    assert "column id is bigint (an identity column)" in line, line
    assert "needs uuid" not in line and "TYPE" not in line, "never advise changing an identity column's type"
    if auth_id:
        assert "the auth id is in column auth_user_id (uuid, unique)" in line, line
    else:
        assert "keep the app's own sync for this table" in line, line


APP_NOT_NULL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  email text, email_verified boolean, created_at timestamptz, updated_at timestamptz,
  username text NOT NULL
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""


def test_an_app_column_not_null_without_default_is_adopted_and_its_ghosts_reported_not_succeeded(db):
    db.sql(APP_NOT_NULL, user="postgres")
    seed_ghosts(db)
    db.upgrade()  # no longer refused: 0003 names each row it could not write and ends partial
    [(run_status, details)] = db.sql("SELECT status, details FROM public.cleanup_audit_log "
                                     "WHERE job_name = 'backfill_ghost_users'")
    assert run_status == "partial" and len(details["unrepairable"]) == 5
    assert all(u["sqlstate"] == "23502" for u in details["unrepairable"])
    proc = ghostsync_cli(db, "backfill")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "backfill partial" in proc.stdout
    assert db.value("SELECT status FROM public.cleanup_audit_log WHERE job_name = 'backfill_ghost_users' "
                    "ORDER BY id DESC LIMIT 1") == "partial"
    assert "username" in db.value("SELECT details ->> 'error' FROM public.cleanup_audit_log "
                                  "WHERE job_name = 'backfill_ghost_users' ORDER BY id DESC LIMIT 1")
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ghost_count(db) == 5
    found = status(db)
    assert found["healthy"] is False
    [cannot] = [p for p in found["problems"] if p["code"] == "profile_cannot_be_created"]
    assert cannot["message"].startswith("5 profile(s) cannot be created: column username is NOT NULL")


SWALLOWING_TRIGGER = """
CREATE FUNCTION public.only_invited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RETURN NULL;
END
$$;
CREATE TRIGGER only_invited BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.only_invited();
"""


def test_an_app_trigger_that_swallows_the_insert_is_named_and_repair_does_not_succeed(db):
    db.sql(APP_NOT_NULL.replace("username text NOT NULL", "username text"), user="postgres")
    db.upgrade()
    db.sql(SWALLOWING_TRIGGER, user="postgres")
    db.sql("SET session_replication_role = replica; "
           "INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at) VALUES "
           "('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', "
           "'quiet@example.com', now(), now())")
    for command in ("backfill", "repair"):
        proc = ghostsync_cli(db, command)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert "succeeded" not in proc.stdout and "walked 0" not in proc.stdout, proc.stdout
    assert ghost_count(db) == 1
    assert db.value("SELECT status FROM public.cleanup_audit_log WHERE job_name = 'backfill_ghost_users' "
                    "ORDER BY id DESC LIMIT 1") == "partial"
    [cannot] = [p for p in status(db)["problems"] if p["code"] == "profile_cannot_be_created"]
    assert "BEFORE INSERT trigger only_invited" in cannot["message"]


APP_LOCAL_TIMESTAMPS = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  email text, email_verified boolean NOT NULL DEFAULT false,
  deleted_at timestamp, created_at timestamp NOT NULL DEFAULT now(), updated_at timestamp NOT NULL DEFAULT now()
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""


def test_timestamps_without_time_zone_are_written_and_compared_as_utc_whatever_the_session_zone(db):
    db.sql(APP_LOCAL_TIMESTAMPS, user="postgres")
    seed_ghosts(db)
    db.sql("UPDATE auth.users SET deleted_at = '2026-06-01 12:00:00+00' WHERE email LIKE 'ghost.sso%%'")
    db.upgrade(**{"batch_size": "2"})
    berlin = {"PGTZ": "Europe/Berlin"}
    db.sql("UPDATE public.users SET deleted_at = NULL")  # stale: repair must write it back as UTC
    proc = ghostsync_cli(db, "repair", env_extra=berlin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert db.value("SELECT deleted_at::text FROM public.users WHERE deleted_at IS NOT NULL") == \
        "2026-06-01 12:00:00"
    found = status(db, **berlin)
    assert found["stale_profiles"] == 0 and found["healthy"] is True, found["problems"]


APP_NULLABLE_KEY = """
CREATE TABLE public.users (
  id uuid UNIQUE,
  email text, email_verified boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
  note text
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
INSERT INTO public.users (id, note) VALUES (NULL, 'a row the app keeps without an account');
"""


def test_a_null_id_row_is_neither_ghost_nor_orphan_and_repair_does_not_crash(db):
    db.sql(APP_NULLABLE_KEY, user="postgres")
    seed_ghosts(db)
    db.upgrade()
    found = status(db)
    assert (found["ghosts"], found["orphans"]) == (0, 0) and found["healthy"] is True, found["problems"]
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert db.value("SELECT count(*) FROM public.users WHERE id IS NULL") == 1


@pytest.mark.parametrize("policy", [
    "CREATE POLICY everyone ON public.users FOR SELECT TO authenticated USING (true)",
    "ALTER TABLE public.users DISABLE ROW LEVEL SECURITY",
])
def test_exposure_is_judged_from_policies_and_grants(db, policy):
    db.sql(without_app_trigger(APP_STARTER_SQL) + policy, user="postgres")
    db.upgrade()
    assert "email" not in columns(db)


def test_the_install_jobs_write_timestamps_without_time_zone_as_utc_under_another_session_zone(db, monkeypatch):
    """0003's backfill and 0009's resync run in the migration's session: its TimeZone changes nothing."""
    db.sql(APP_LOCAL_TIMESTAMPS, user="postgres")
    seed_ghosts(db)
    db.sql("UPDATE auth.users SET deleted_at = '2026-06-01 12:00:00+00', created_at = '2026-05-01 08:00:00+00', "
           "updated_at = '2026-05-02 09:00:00+00' WHERE email LIKE 'ghost.sso%%'")
    monkeypatch.setenv("PGTZ", "Europe/Berlin")
    proc = db.alembic_cli("upgrade", "head")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # created by the backfill from the account; deleted_at (and updated_at, now) then by the resync
    assert db.sql("SELECT created_at::text, deleted_at::text, "
                  "abs(extract(epoch FROM updated_at - (now() AT TIME ZONE 'UTC'))) < 600 FROM public.users "
                  "WHERE email LIKE 'ghost.sso%%'") == [("2026-05-01 08:00:00", "2026-06-01 12:00:00", True)]
    assert status(db, PGTZ="Europe/Berlin")["stale_profiles"] == 0


SIGNUP = ("INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at) VALUES "
          "('00000000-0000-0000-0000-000000000000', %s, 'authenticated', 'authenticated', %s, "
          "'2026-05-01 08:00:00+00', '2026-05-01 08:00:00+00')")


def test_a_signup_an_app_trigger_swallows_is_recorded_and_counted(db):
    """The app's BEFORE INSERT trigger on public.users returns NULL: the signup goes through, and the insert
    sync records what wrote no row (SQLSTATE 02000, the trigger named) for status to count."""
    db.sql(APP_NOT_NULL.replace("username text NOT NULL", "username text"), user="postgres")
    db.upgrade()
    db.sql(SWALLOWING_TRIGGER, user="postgres")
    account = "6f0e3c1a-0000-4000-8000-000000000001"
    db.sql(SIGNUP, (account, "swallowed@example.com"))
    assert ghost_count(db) == 1
    [(state, message)] = db.sql("SELECT sqlstate, message FROM ghostsync.sync_failures WHERE user_id = %s",
                                (account,))
    assert state == "02000" and "BEFORE INSERT trigger only_invited" in message, message
    found = status(db)
    [cannot] = [p for p in found["problems"] if p["code"] == "profile_cannot_be_created"]
    assert cannot["message"].startswith("1 profile(s) cannot be created: the insert wrote no row: BEFORE INSERT "
                                        "trigger only_invited on public.users skipped it"), cannot["message"]
    # the update sync's creation of a missing profile is recorded alike
    db.sql("UPDATE auth.users SET email = 'swallowed.again@example.com' WHERE id = %s", (account,))
    assert db.value("SELECT sqlstate || ' ' || operation FROM ghostsync.sync_failures WHERE user_id = %s",
                    (account,)) == "02000 UPDATE"


def test_a_signup_an_app_rule_replaces_is_recorded_and_counted(db):
    """An INSTEAD rule on inserts into public.users: the signup goes through, recorded as skipped (02000)."""
    db.sql(APP_NOT_NULL.replace("username text NOT NULL", "username text"), user="postgres")
    db.upgrade()
    db.sql("CREATE RULE invited_only AS ON INSERT TO public.users DO INSTEAD NOTHING", user="postgres")
    account = "6f0e3c1a-0000-4000-8000-000000000003"
    db.sql(SIGNUP, (account, "ruled@example.com"))
    assert ghost_count(db) == 1
    assert db.sql("SELECT sqlstate, message FROM ghostsync.sync_failures WHERE user_id = %s", (account,)) == [
        ("02000", "the insert wrote no row: rule invited_only on public.users skipped it")]
    [cannot] = [p for p in status(db)["problems"] if p["code"] == "profile_cannot_be_created"]
    assert "rule invited_only" in cannot["message"], cannot["message"]


def test_a_signup_beside_an_app_rule_on_updates_writes_the_synced_columns_through_it(db):
    """A rule on updates of public.users (here an audit rule, DO ALSO) refuses ON CONFLICT: where the app's trigger
    wrote the profile first, the insert sync updates ghostsync's columns in it plainly, through the rule."""
    db.sql(APP_STARTER_SQL, user="postgres")
    db.upgrade()  # adds the synced columns (email) the rule logs
    db.sql("CREATE TABLE public.user_log (id uuid, email text);"
           "CREATE RULE log_updates AS ON UPDATE TO public.users DO ALSO "
           "INSERT INTO public.user_log VALUES (NEW.id, NEW.email)", user="postgres")
    account = "6f0e3c1a-0000-4000-8000-000000000004"
    db.sql(SIGNUP, (account, "ruled.update@example.com"))
    assert db.sql("SELECT sqlstate, message FROM ghostsync.sync_failures") == []
    assert db.value("SELECT email FROM public.users WHERE id = %s", (account,)) == "ruled.update@example.com"
    assert db.value("SELECT email FROM public.user_log WHERE id = %s", (account,)) == "ruled.update@example.com"


def test_the_syncs_write_timestamps_without_time_zone_as_utc_whatever_the_auth_sessions_zone(db):
    """The auth service's session runs with TimeZone = Europe/Berlin: the profile's timestamp (without time
    zone) columns still hold UTC, and status (in Berlin too) finds nothing stale."""
    db.sql(APP_LOCAL_TIMESTAMPS, user="postgres")
    db.upgrade()
    account = "6f0e3c1a-0000-4000-8000-000000000002"
    db.sql("SET TimeZone = 'Europe/Berlin'; " + SIGNUP, (account, "berlin@example.com"))
    assert db.value("SELECT created_at::text FROM public.users WHERE id = %s", (account,)) == "2026-05-01 08:00:00"
    db.sql("SET TimeZone = 'Europe/Berlin'; UPDATE auth.users SET deleted_at = '2026-06-01 12:00:00+00' "
           "WHERE id = %s", (account,))
    assert db.sql("SELECT deleted_at::text, abs(extract(epoch FROM updated_at - (now() AT TIME ZONE 'UTC'))) < 600 "
                  "FROM public.users WHERE id = %s", (account,)) == [("2026-06-01 12:00:00", True)]
    found = status(db, PGTZ="Europe/Berlin")
    assert found["stale_profiles"] == 0 and found["healthy"] is True, found["problems"]


def test_the_upgrade_and_status_judge_who_can_read_the_table_alike(db):
    """One heuristic (ghostsync.migrations.exposure): a SELECT policy without USING lets no row through, so the
    upgrade adds the synced columns to the table and status does not warn them readable."""
    db.sql(without_app_trigger(APP_STARTER_SQL) + "GRANT SELECT ON public.users TO anon; "
           "CREATE POLICY no_using ON public.users FOR SELECT TO anon", user="postgres")
    seed_ghosts(db)
    db.upgrade()
    assert "email" in columns(db)
    assert db.value("SELECT count(*) FROM public.users") > 0
    assert db.value("SET ROLE anon; SELECT count(*) FROM public.users") == 0  # what PostgreSQL makes of it
    found = status(db)
    assert "synced_columns_readable" not in [w["code"] for w in found["warnings"]], found["warnings"]


def test_a_policy_that_lets_every_signed_in_user_read_counts_as_open(db):
    """``auth.uid() IS NOT NULL`` mentions auth.uid() yet lets every signed-in user read every row: no column of
    auth data is added, and status says why."""
    db.sql(without_app_trigger(APP_STARTER_SQL) + "GRANT SELECT ON public.users TO authenticated; "
           "CREATE POLICY signed_in_read ON public.users FOR SELECT TO authenticated "
           "USING (auth.uid() IS NOT NULL)", user="postgres")
    before = columns(db)
    db.upgrade()
    assert columns(db) == before, "no column of auth data on a table every signed-in user reads"
    [absent] = [w for w in status(db)["warnings"] if w["code"] == "synced_columns_absent"]
    assert "readable by other users" in absent["message"]
