"""ghostsync never takes over what the app already has; it works beside it and tells its objects from the app's.

Supabase's own guide ("managing user data") tells apps to create
``public.handle_new_user()`` and ``on_auth_user_created`` filling
``public.profiles``: the very names of the incident report. ghostsync's live
in the ``ghostsync`` schema and under ``ghostsync_`` names, and are recorded
in ``ghostsync.objects`` with their DDL.
"""

from __future__ import annotations

import json

import psycopg2

from ghostsync.testing.supabase import APP_PROFILE_TRIGGER_SQL, APP_PROFILES_SQL, MANAGING_USER_DATA_SQL
from tests.seeding import ghost_count, ghostsync_cli, seed_ghosts


def app_objects(db) -> dict[str, tuple]:
    """The app's function and trigger: identity and text, to prove they are untouched."""
    return {
        "function": tuple(db.sql("SELECT oid::text, prosrc, proowner::regrole::text, proacl::text FROM pg_proc "
                                 "WHERE oid = 'public.handle_new_user()'::regprocedure")[0]),
        "trigger": tuple(db.sql("SELECT oid::text, pg_get_triggerdef(oid), tgenabled::text FROM pg_trigger "
                                "WHERE tgrelid = 'auth.users'::regclass AND tgname = 'on_auth_user_created'")[0]),
    }


def status(db) -> tuple[int, dict]:
    proc = ghostsync_cli(db, "status", "--json")
    return proc.returncode, json.loads(proc.stdout)


def test_supabase_profiles_pattern_is_left_alone_and_both_rows_are_written(db):
    db.sql(MANAGING_USER_DATA_SQL, user="postgres")
    with db.auth() as auth:
        before_install = auth.signup(email="early@example.com", user_meta={"first_name": "Early"})
    seed_ghosts(db)
    app = app_objects(db)
    db.upgrade()
    assert app_objects(db) == app, "the app's function and trigger are untouched"
    assert ghost_count(db) == 0
    with db.auth() as auth:
        later = auth.signup(email="later@example.com", user_meta={"first_name": "Later", "last_name": "On"})
        phone = auth.signup(phone="+15550009999")
    for uid, first in ((before_install, "Early"), (later, "Later"), (phone, None)):
        assert db.value("SELECT first_name FROM public.profiles WHERE id = %s", (str(uid),)) == first
        assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(uid),)) == 1
    code, found = status(db)
    assert code == 0 and found["healthy"], found["problems"]
    assert found["app_triggers"]["on_auth_user_created ON auth.users"] == {
        "table": "auth.users", "function": "public.handle_new_user()", "state": "enabled"}
    assert "on_auth_user_created" not in found["triggers"]
    text = ghostsync_cli(db, "status").stdout
    assert "app's trigger     on_auth_user_created ON auth.users -> public.handle_new_user(): enabled" in text
    db.downgrade("base")
    assert app_objects(db) == app, "rollback leaves the app's function and trigger"
    with db.auth() as auth:
        after = auth.signup(email="after@example.com", user_meta={"first_name": "After"})
    assert db.value("SELECT first_name FROM public.profiles WHERE id = %s", (str(after),)) == "After"
    assert db.value("SELECT count(*) FROM pg_proc WHERE pronamespace = 'ghostsync'::regnamespace") == 0


def test_an_app_trigger_on_public_users_keeps_working_and_stays(db):
    db.sql(APP_PROFILES_SQL + APP_PROFILE_TRIGGER_SQL, user="postgres")
    seed_ghosts(db)
    db.upgrade()
    with db.auth() as auth:
        uid = auth.signup(email="  MiXed@Example.COM ")
        auth.admin_change_email(uid, "Second@Example.com")
    assert db.value("SELECT email FROM public.users WHERE id = %s", (str(uid),)) == "second@example.com"
    code, found = status(db)
    assert found["app_triggers"]["normalize_profile_email ON public.users"]["state"] == "enabled"
    assert code == 0 and found["healthy"], found["problems"]
    # Were the app's trigger to make a profile differ from its account, status would say so.
    db.sql("UPDATE public.users SET email = upper(email) WHERE id = %s", (str(uid),), user="postgres")
    db.sql("ALTER TABLE public.users DISABLE TRIGGER normalize_profile_email; "
           "UPDATE public.users SET email = upper(email)", user="postgres")
    code, found = status(db)
    assert code == 1 and {p["code"] for p in found["problems"]} == {"stale_profiles"}
    assert found["app_triggers"]["normalize_profile_email ON public.users"]["state"] == "disabled"
    db.sql("ALTER TABLE public.users ENABLE TRIGGER normalize_profile_email", user="postgres")
    db.downgrade("base")
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgname = 'normalize_profile_email'") == 1


def test_an_object_of_ghostsyncs_name_that_ghostsync_did_not_create_is_never_replaced(db):
    db.sql("""
        CREATE SCHEMA ghostsync;
        CREATE FUNCTION ghostsync.handle_new_user() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RETURN NEW; END $$;
    """, user="postgres")
    mine = db.value("SELECT prosrc FROM pg_proc WHERE oid = 'ghostsync.handle_new_user()'::regprocedure")
    proc = db.alembic_cli("upgrade", "head")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "FAILED: ghostsync: function ghostsync.handle_new_user() exists and was not created by ghostsync" in out
    assert "Traceback" not in out
    assert db.value("SELECT prosrc FROM pg_proc WHERE oid = 'ghostsync.handle_new_user()'::regprocedure") == mine
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0001"
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                    "AND NOT tgisinternal") == 0


def test_a_trigger_of_ghostsyncs_name_made_by_hand_is_flagged(db):
    db.upgrade()
    # someone drops ghostsync's trigger and puts their own of the same name in its place
    db.sql("""
        CREATE FUNCTION public.mine() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        DROP TRIGGER ghostsync_on_auth_user_created ON auth.users;
        CREATE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users
          FOR EACH ROW EXECUTE FUNCTION public.mine();
    """)
    code, found = status(db)
    assert code == 1
    assert [p["code"] for p in found["problems"]] == ["trigger_drift"]
    assert found["triggers"]["ghostsync_on_auth_user_created"]["function"] == "public.mine()"
    # and with the register's entry gone too, it is not ghostsync's at all: downgrade leaves it
    db.sql("DELETE FROM ghostsync.objects WHERE name = 'ghostsync_on_auth_user_created ON auth.users'")
    code, found = status(db)
    assert "trigger_not_ghostsyncs" in {p["code"] for p in found["problems"]}
    db.downgrade("base")
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgname = 'ghostsync_on_auth_user_created'") == 1


def test_status_on_a_database_whose_app_functions_share_the_reports_names_is_not_fooled(db):
    """Before the fix, `upgrade head` replaced public.handle_new_user() and status said HEALTHY: now the
    app's function keeps its text and ghostsync's own objects are what status judges."""
    db.sql(MANAGING_USER_DATA_SQL, user="postgres")
    db.upgrade()
    conn = psycopg2.connect(db.url("postgres"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT prosrc FROM pg_proc WHERE oid = 'public.handle_new_user()'::regprocedure")
            assert "public.profiles" in cur.fetchone()[0]
    finally:
        conn.close()
    code, found = status(db)
    assert code == 0 and set(found["functions"]) == {
        "ghostsync.handle_new_user()", "ghostsync.handle_user_updated()", "ghostsync.handle_user_deleted()",
        "ghostsync.handle_users_deleted()", "ghostsync.write_profile(uuid,boolean)"}
