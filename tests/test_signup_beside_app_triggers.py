"""An app's own trigger on auth.users that writes public.users, whatever its name, timing and ON CONFLICT:
every signup succeeds, the app's columns hold the app's values, ghostsync's columns equal the account.

ghostsync's insert and update syncs are deferred constraint triggers (ghostsync_0010): they fire at COMMIT,
after every immediate trigger, and write only ghostsync's synced columns.
"""

from __future__ import annotations

import json

import psycopg2
import psycopg2.errors
import pytest

from ghostsync.testing.pgbouncer import ThrowawayPgBouncer
from ghostsync.testing.supabase import APP_KEYED_ROWS_SQL, APP_STARTER_SQL, DEFER_KEYED_ROWS_KEY_SQL
from tests.seeding import failures, ghost_count, ghostsync_cli

# issue 18's cases hold on every role setup of Supabase (tests/conftest.py)
ON_EVERY_ROLE_SETUP = True

# An app's own public.users (the subscription starter's shape, with ghostsync's synced columns already there
# so that today's adoption check takes it), and a second table the app fills from the same trigger.
APP_TABLE_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY {key},
  full_name text,
  avatar_url text,
  email text,
  email_verified boolean,
  created_at timestamptz,
  updated_at timestamptz
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
CREATE TABLE public.user_settings (
  user_id uuid PRIMARY KEY REFERENCES public.users (id) ON DELETE CASCADE,
  theme text NOT NULL
);
"""

APP_WRITES = {
    "plain": "INSERT INTO public.users (id, full_name, avatar_url) "
             "VALUES (new.id, new.raw_user_meta_data->>'full_name', new.raw_user_meta_data->>'avatar_url');",
    "do_nothing": "INSERT INTO public.users (id, full_name, avatar_url) "
                  "VALUES (new.id, new.raw_user_meta_data->>'full_name', new.raw_user_meta_data->>'avatar_url') "
                  "ON CONFLICT (id) DO NOTHING;",
    "do_update": "INSERT INTO public.users (id, full_name, avatar_url) "
                 "VALUES (new.id, new.raw_user_meta_data->>'full_name', new.raw_user_meta_data->>'avatar_url') "
                 "ON CONFLICT (id) DO UPDATE SET full_name = excluded.full_name, avatar_url = excluded.avatar_url;",
}
SECOND_TABLE = "INSERT INTO public.user_settings (user_id, theme) VALUES (new.id, 'dark');"

APP_TRIGGER_SQL = """
CREATE FUNCTION public.app_handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  {writes}
  RETURN new;
END
$$;
CREATE TRIGGER {name} {timing} INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.app_handle_new_user();
"""

# Names that sort before and after 0009's ghostsync_on_auth_user_created (the starter's own name sorts
# after it), and one that sorts after 0010's zz_ghostsync_on_auth_user_created too.
NAMES = {"sorts_first": "a_create_profile", "sorts_last": "on_auth_user_created",
         "sorts_after_zz": "zzz_create_profile"}
META = {"full_name": "Ada Lovelace", "avatar_url": "https://example.com/ada.png"}


def install_app(db, *, timing="AFTER", name="on_auth_user_created", write="plain", tables=1):
    # A BEFORE INSERT trigger writes the profile before the account exists: the app's key cannot be immediate.
    key = "REFERENCES auth.users (id) ON DELETE CASCADE" if timing == "AFTER" else ""
    writes = APP_WRITES[write] + ("\n  " + SECOND_TABLE if tables == 2 else "")
    db.sql(APP_TABLE_SQL.format(key=key) + APP_TRIGGER_SQL.format(writes=writes, name=name, timing=timing),
           user="postgres")
    db.upgrade()


def profile_of(db, uid):
    [row] = db.sql(
        "SELECT p.full_name, p.avatar_url, p.email IS NOT DISTINCT FROM u.email, "
        "p.email_verified IS NOT DISTINCT FROM (u.email_confirmed_at IS NOT NULL), "
        "p.created_at IS NOT DISTINCT FROM u.created_at, p.email "
        "FROM public.users AS p JOIN auth.users AS u ON u.id = p.id WHERE p.id = %s", (str(uid),))
    return row


CASES = [(timing, name, write, 1) for timing in ("AFTER", "BEFORE") for name in NAMES for write in APP_WRITES]
CASES += [("AFTER", name, write, 2) for name in NAMES for write in ("plain", "do_nothing")]


@pytest.mark.parametrize(("timing", "name", "write", "tables"), CASES,
                         ids=[f"{t.lower()}-{n}-{w}-{k}table" for t, n, w, k in CASES])
def test_every_signup_succeeds_beside_the_apps_trigger(db, timing, name, write, tables):
    install_app(db, timing=timing, name=NAMES[name], write=write, tables=tables)
    with db.auth() as auth:
        unconfirmed = auth.signup(email="ada@example.com", user_meta=META)
        confirmed = auth.signup(email="grace@example.com", confirmed=True, user_meta=META)
        phone = auth.signup(phone="+15550000001", user_meta=META)
        auth.confirm_email(unconfirmed)
    for uid in (unconfirmed, confirmed, phone):
        # the app's columns hold the app's values; ghostsync's equal the account
        assert profile_of(db, uid)[:5] == ("Ada Lovelace", "https://example.com/ada.png", True, True, True)
    assert profile_of(db, confirmed)[5] == "grace@example.com"
    if tables == 2:
        assert db.value("SELECT count(*) FROM public.user_settings") == 3
    assert failures(db) == []
    assert ghost_count(db) == 0
    proc = ghostsync_cli(db, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["stale_profiles"] == 0


def test_status_warns_about_each_app_trigger_that_writes_profiles(db):
    install_app(db)
    db.sql("""
        CREATE FUNCTION public.app_touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE "public"."users" SET full_name = 'x' WHERE id = new.id; RETURN new; END $$;
        CREATE TRIGGER app_touch AFTER UPDATE ON auth.users FOR EACH ROW EXECUTE FUNCTION public.app_touch();
        CREATE FUNCTION public.app_audit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE auth.users SET raw_app_meta_data = '{}' WHERE false; RETURN new; END $$;
        CREATE TRIGGER app_audit AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.app_audit();
    """, user="postgres")
    proc = ghostsync_cli(db, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = [w for w in json.loads(proc.stdout)["warnings"] if w["code"] == "app_trigger_writes_profiles"]
    assert [w["message"].split()[2] for w in found] == ["app_touch", "on_auth_user_created"]
    # drift stays about ghostsync's own objects
    assert not [p for p in json.loads(proc.stdout)["problems"]]


def test_an_app_trigger_whose_rows_reference_ghostsyncs_profile_with_a_deferred_key(db):
    """An app trigger that writes only a row referencing the profile ghostsync creates: with the key
    DEFERRABLE INITIALLY DEFERRED it is checked at COMMIT, after ghostsync's write (queued first)."""
    db.upgrade()
    db.sql(APP_KEYED_ROWS_SQL.replace("ON DELETE CASCADE", "ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED"),
           user="postgres")
    with db.auth() as auth:
        uid = auth.signup(email="settings@example.com", confirmed=True)
    assert db.value("SELECT theme FROM public.user_settings WHERE user_id = %s", (str(uid),)) == "dark"
    assert failures(db) == [] and ghost_count(db) == 0


def test_an_app_trigger_whose_rows_reference_the_profile_with_an_immediate_key_stops_0010(db):
    """At 0009 the app's trigger (sorting after ghostsync_on_auth_user_created) found the profile there; from
    0010 the profile comes at COMMIT and its key would fail every signup: the upgrade stops, with one line
    naming the trigger, the table and the key, and applies nothing; deferring the key, as it says, lets it
    through and signups keep working."""
    db.upgrade("ghostsync_0009")
    db.sql(APP_KEYED_ROWS_SQL, user="postgres")
    with db.auth() as auth:
        before = auth.signup(email="before@example.com", confirmed=True)
    proc = db.alembic_cli("upgrade", "head")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    [line] = [ln for ln in out.splitlines() if "ghostsync: " in ln and "FAILED" in ln]
    assert ("app trigger on_auth_user_created on auth.users inserts into public.user_settings, whose key "
            "user_settings_user_id_fkey to public.users is checked at once") in line, line
    assert "ALTER TABLE public.user_settings ALTER CONSTRAINT user_settings_user_id_fkey DEFERRABLE INITIALLY " \
           "DEFERRED" in line, line
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0009"
    with db.auth() as auth:  # nothing applied: signups still work at 0009
        auth.signup(email="still@example.com", confirmed=True)
    db.sql(DEFER_KEYED_ROWS_KEY_SQL, user="postgres")
    db.upgrade()
    with db.auth() as auth:
        after = auth.signup(email="after@example.com", confirmed=True)
    for uid in (before, after):
        assert db.value("SELECT theme FROM public.user_settings WHERE user_id = %s", (str(uid),)) == "dark"
    assert failures(db) == [] and ghost_count(db) == 0


def test_status_reports_an_app_trigger_whose_rows_reference_the_profile_with_an_immediate_key(db):
    """Such a trigger added after the upgrade fails every signup; status says so, as a problem, and stops
    saying so once the key is deferred (when signups work again)."""
    db.upgrade()
    db.sql(APP_KEYED_ROWS_SQL, user="postgres")
    with pytest.raises(psycopg2.errors.ForeignKeyViolation), db.auth() as auth:
        auth.signup(email="fails@example.com", confirmed=True)
    proc = ghostsync_cli(db, "status", "--json")
    found = json.loads(proc.stdout)
    assert proc.returncode == 1 and [p["code"] for p in found["problems"]] == ["app_key_checked_before_profile"]
    message = found["problems"][0]["message"]
    assert message.startswith("app trigger on_auth_user_created on auth.users (function app_settings()) "
                              "inserts into public.user_settings, whose key user_settings_user_id_fkey"), message
    db.sql(DEFER_KEYED_ROWS_KEY_SQL, user="postgres")
    with db.auth() as auth:
        uid = auth.signup(email="works@example.com", confirmed=True)
    assert db.value("SELECT theme FROM public.user_settings WHERE user_id = %s", (str(uid),)) == "dark"
    proc = ghostsync_cli(db, "status", "--json")
    assert proc.returncode == 0, proc.stdout


def test_an_app_trigger_keyed_to_the_profile_beside_the_apps_own_profile_trigger_is_no_problem(db):
    """The starter's trigger inserts the profile, a second app trigger (sorting after it) a row keyed to it
    (checked at once): the profile is there by then, from the app. No refusal, no problem, and signups work."""
    db.sql(APP_STARTER_SQL + APP_KEYED_ROWS_SQL.replace(
        "CREATE TRIGGER on_auth_user_created ", "CREATE TRIGGER on_auth_user_created_settings "), user="postgres")
    proc = db.alembic_cli("upgrade", "head")
    assert proc.returncode == 0, proc.stderr
    with db.auth() as auth:
        uid = auth.signup(email="split@example.com", confirmed=True)
    assert db.value("SELECT theme FROM public.user_settings WHERE user_id = %s", (str(uid),)) == "dark"
    proc = ghostsync_cli(db, "status", "--json")
    assert proc.returncode == 0, proc.stdout
    assert "app_key_checked_before_profile" not in proc.stdout


def test_an_apps_before_update_trigger_that_confirms_is_synced(db):
    """The app confirms an account in a BEFORE UPDATE trigger (here: on its first sign-in). The UPDATE
    names only last_sign_in_at; the update sync still sees the row as written."""
    db.upgrade()
    db.sql("""
        CREATE FUNCTION public.app_confirm_on_sign_in() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF new.last_sign_in_at IS NOT NULL AND new.email_confirmed_at IS NULL THEN
            new.email_confirmed_at := now();
          END IF;
          RETURN new;
        END $$;
        CREATE TRIGGER app_confirm_on_sign_in BEFORE UPDATE ON auth.users
          FOR EACH ROW EXECUTE FUNCTION public.app_confirm_on_sign_in();
    """, user="postgres")
    with db.auth() as auth:
        uid = auth.signup(email="late@example.com")
        db.sql("UPDATE auth.users SET last_sign_in_at = now() WHERE id = %s", (str(uid),))
        written = db.value("SELECT updated_at FROM public.users WHERE id = %s", (str(uid),))
        # a sign-in of a confirmed account changes no synced value: no profile write
        db.sql("UPDATE auth.users SET last_sign_in_at = now() WHERE id = %s", (str(uid),))
    assert db.value("SELECT email_verified FROM public.users WHERE id = %s", (str(uid),)) is True
    assert db.value("SELECT updated_at FROM public.users WHERE id = %s", (str(uid),)) == written
    assert ghostsync_cli(db, "status").returncode == 0


# An app trigger whose name sorts after zz_ghostsync_on_auth_user_created writes second under SET CONSTRAINTS
# ALL IMMEDIATE and its plain INSERT collides: a documented limit (README, "Beside the app's own trigger").
@pytest.mark.parametrize("name", [NAMES["sorts_first"], NAMES["sorts_last"]])
def test_signups_under_set_constraints_all_immediate(db, name):
    """A client's SET CONSTRAINTS ALL IMMEDIATE (the exported pgTAP file runs one) makes the syncs fire at the
    end of the statement, in trigger-name order: ghostsync's sort after the app's, the starter's
    ``on_auth_user_created`` included, so the app's plain INSERT writes its row first."""
    install_app(db, name=name)
    conn = psycopg2.connect(db.url("supabase_admin"))
    try:
        with conn.cursor() as cur:
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute("INSERT INTO auth.users (instance_id, id, aud, role, email, raw_user_meta_data, created_at, "
                        "updated_at, is_sso_user, is_anonymous) VALUES ('00000000-0000-0000-0000-000000000000', "
                        "gen_random_uuid(), 'authenticated', '', 'now@example.com', %s, now(), now(), false, false) "
                        "RETURNING id", (json.dumps(META),))
            [uid] = cur.fetchone()
            # written at the statement's end, before COMMIT
            cur.execute("SELECT full_name, email FROM public.users WHERE id = %s", (uid,))
            assert cur.fetchone() == ("Ada Lovelace", "now@example.com")
        conn.commit()
    finally:
        conn.close()
    assert failures(db) == []


# -- the app's deferrable constraints and ghostsync.* settings -----------------------------------------

def deferrable_email_key(db, mode):
    db.sql("ALTER TABLE public.users ADD CONSTRAINT users_email_key UNIQUE (email) " + mode, user="postgres")


def twin_accounts(db):
    """An account with shared@example.com, and an SSO account (auth.users lets those share an email)."""
    with db.auth() as auth:
        first = auth.signup(email="shared@example.com", confirmed=True)
        twin = auth.signup_sso("twin@example.com")
    return first, twin


def take_shared_email(db, twin, *before, options=None, user="supabase_auth_admin"):
    """In one transaction: ``before``, then the twin's email becomes shared@example.com; commits."""
    conn = psycopg2.connect(db.url(user), options=options)
    try:
        with conn.cursor() as cur:
            for statement in before:
                cur.execute(statement)
            cur.execute("UPDATE auth.users SET email = 'shared@example.com' WHERE id = %s", (str(twin),))
        conn.commit()
    finally:
        conn.close()


def assert_recorded_not_failed(db, twin):
    assert db.value("SELECT email FROM auth.users WHERE id = %s", (str(twin),)) == "shared@example.com"
    [(user_id, operation, sqlstate, message, _count)] = failures(db)
    assert (user_id, operation, sqlstate) == (str(twin), "UPDATE", "23505") and "users_email_key" in message


def test_a_ghostsync_setting_set_in_the_session_changes_nothing(db):
    """A session-level SET of ghostsync.deferred_profile_constraints must not make the sync skip the check of
    the app's deferred constraint (which would then fail the auth service's COMMIT)."""
    db.upgrade()
    deferrable_email_key(db, "DEFERRABLE INITIALLY DEFERRED")
    _first, twin = twin_accounts(db)
    take_shared_email(db, twin, options="-c ghostsync.deferred_profile_constraints=false")
    assert_recorded_not_failed(db, twin)


def test_a_ghostsync_setting_leaked_through_a_transaction_pooler_changes_nothing(db):
    """Transaction-mode PgBouncer, one server connection: one client's session-level SET stays on the server
    connection and reaches the next client's transaction."""
    db.upgrade()
    deferrable_email_key(db, "DEFERRABLE INITIALLY DEFERRED")
    _first, twin = twin_accounts(db)
    with ThrowawayPgBouncer(db.owner.server.host, db.owner.server.port, pool_size=1) as bouncer:
        leaker = psycopg2.connect(bouncer.url(db.name, "supabase_auth_admin"))
        try:
            leaker.autocommit = True
            with leaker.cursor() as cur:
                cur.execute("SET ghostsync.deferred_profile_constraints = 'false'")
            conn = psycopg2.connect(bouncer.url(db.name, "supabase_auth_admin"))
            try:
                with conn.cursor() as cur:
                    cur.execute("SHOW ghostsync.deferred_profile_constraints")
                    assert cur.fetchone() == ("false",), "the pooler did not hand the SET on"
                    cur.execute("UPDATE auth.users SET email = 'shared@example.com' WHERE id = %s", (str(twin),))
                conn.commit()
            finally:
                conn.close()
        finally:
            leaker.close()
    assert_recorded_not_failed(db, twin)


def test_set_constraints_all_deferred_with_an_initially_immediate_app_constraint(db):
    db.upgrade()
    deferrable_email_key(db, "DEFERRABLE INITIALLY IMMEDIATE")
    _first, twin = twin_accounts(db)
    take_shared_email(db, twin, "SET CONSTRAINTS ALL DEFERRED")
    assert_recorded_not_failed(db, twin)


def test_a_deferred_constraint_added_in_the_same_transaction(db):
    db.upgrade()
    _first, twin = twin_accounts(db)
    take_shared_email(db, twin,
                      "INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at, "
                      "is_sso_user, is_anonymous) VALUES ('00000000-0000-0000-0000-000000000000', "
                      "gen_random_uuid(), 'authenticated', '', 'third@example.com', now(), now(), true, false)",
                      "SET CONSTRAINTS ALL IMMEDIATE",  # the signup's sync runs (and remembers) now
                      "ALTER TABLE public.users ADD CONSTRAINT users_email_key UNIQUE (email) "
                      "DEFERRABLE INITIALLY DEFERRED",
                      "SET CONSTRAINTS ALL DEFERRED",
                      user="supabase_admin")
    assert_recorded_not_failed(db, twin)


def test_a_constraint_the_caller_made_immediate_stays_immediate(db):
    """The caller made the app's deferred constraint IMMEDIATE; after a signup in the same transaction the
    app's own duplicate still fails at its statement, not later at COMMIT."""
    db.upgrade()
    deferrable_email_key(db, "DEFERRABLE INITIALLY DEFERRED")
    first, _twin = twin_accounts(db)
    conn = psycopg2.connect(db.url("supabase_admin"))
    try:
        with conn.cursor() as cur:
            cur.execute("SET CONSTRAINTS users_email_key IMMEDIATE")
            cur.execute("INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at, "
                        "is_sso_user, is_anonymous) VALUES ('00000000-0000-0000-0000-000000000000', "
                        "gen_random_uuid(), 'authenticated', '', 'new@example.com', now(), now(), false, false)")
            cur.execute("UPDATE auth.users SET email_confirmed_at = now() WHERE email = 'new@example.com'")
            cur.execute("SAVEPOINT app")
            with pytest.raises(psycopg2.errors.UniqueViolation):
                cur.execute("UPDATE public.users SET email = 'shared@example.com' WHERE id <> %s", (str(first),))
            cur.execute("ROLLBACK TO SAVEPOINT app")
        conn.commit()
    finally:
        conn.close()
    assert failures(db) == [] and ghost_count(db) == 0


@pytest.mark.parametrize("app_trigger", [False, True], ids=["alone", "beside_app_trigger"])
def test_a_table_without_some_synced_columns_gets_the_ones_it_has(db, app_trigger):
    """An adopted public.users may lack synced columns (shared contract: where the table lets one user read
    another's row nothing is added). The static fast path fails with undefined_column; the fallback writes
    the synced columns the table has, and nothing else."""
    if app_trigger:
        install_app(db, name=NAMES["sorts_last"])
    else:
        db.upgrade()
    db.sql("ALTER TABLE public.users DROP COLUMN email_verified, DROP COLUMN updated_at", user="postgres")
    with db.auth() as auth:
        uid = auth.signup(email="partial@example.com", user_meta=META)
        confirmed = auth.signup(email="partial2@example.com", confirmed=True, user_meta=META)
        auth.confirm_email(uid)
        auth.change_email(uid, "partial3@example.com")
    rows = dict(db.sql("SELECT id::text, email FROM public.users"))
    assert rows == {str(uid): "partial3@example.com", str(confirmed): "partial2@example.com"}
    if app_trigger:
        assert db.value("SELECT count(*) FROM public.users WHERE full_name = 'Ada Lovelace'") == 2
    assert failures(db) == [] and ghost_count(db) == 0
