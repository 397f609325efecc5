"""Issue 18: signups and deletes while ``alembic upgrade head`` runs, on an app's own public.users.

Alembic commits each revision apart, so between ghostsync_0002 and ghostsync_0010 the database sits at each
revision in turn (0003's and 0009's jobs, with their sweeps, take the longest). Signing an account up at each
of those revisions stands for a signup that arrives between two commits of a real upgrade: every signup
succeeds, the app's values are kept, and at head no ghost is left and every profile equals its account.
The same holds after a rollback of ghostsync_0010 and ghostsync_0011 (the database back at ghostsync_0009).
"""

from __future__ import annotations

import json

import psycopg2.errors
import pytest

from ghostsync.testing.supabase import (
    APP_CHAT_SQL,
    APP_KEYED_ROWS_SQL,
    APP_ON_CONFLICT_SQL,
    APP_PRODUCTS_SQL,
    APP_PROFILES_WITHOUT_FK_SQL,
    APP_STARTER_SQL,
)
from tests.seeding import downgrade, ghost_count, ghostsync_cli
from tests.test_deletes import APP_KEY_WITHOUT_CASCADE_SQL, APP_SOFT_DELETE_SQL

# issue 18's cases hold on every role setup of Supabase (tests/conftest.py)
ON_EVERY_ROLE_SETUP = True

REVISIONS = [f"ghostsync_{n:04d}" for n in range(1, 12)]
META = {"full_name": "Grace Hopper", "avatar_url": "g.png", "display_name": "Grace"}
SHAPES = {
    # shape: the app's columns and the value each takes for a signup with META
    "starter": (APP_STARTER_SQL, {"full_name": "Grace Hopper", "avatar_url": "g.png"}),
    "chat": (APP_CHAT_SQL, {}),
    "products": (APP_PRODUCTS_SQL, {"full_name": "Grace Hopper", "locale": "en"}),
    "on_conflict": (APP_ON_CONFLICT_SQL, {"display_name": "Grace"}),
}

# An app that made its own public.users and writes no profile from a trigger (its code was meant to):
# ghostsync's insert sync is the only writer in the window, and keeps writing there.
APP_TABLE_WITHOUT_TRIGGER_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  nickname text
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""


def signup_at_each_revision(db, revisions) -> dict[str, list[str]]:
    """Upgrade one revision at a time and sign up a confirmed and an unconfirmed account at each;
    the failures, by revision (none expected)."""
    failures: dict[str, list[str]] = {}
    accounts: dict[str, list[str]] = {}
    for revision in revisions:
        db.upgrade(revision)
        accounts[revision] = []
        for kind in ("confirmed", "unconfirmed"):
            try:
                with db.auth() as auth:
                    uid = auth.signup(email=f"{kind}-{revision}@example.com", confirmed=kind == "confirmed",
                                      user_meta=META)
                accounts[revision].append(str(uid))
            except Exception as error:  # the auth service's "Database error saving new user"
                failures.setdefault(revision, []).append(str(error).splitlines()[0])
    assert failures == {}, failures
    return accounts


def status(db) -> dict:
    proc = ghostsync_cli(db, "status", "--json")
    return {"exit": proc.returncode, **json.loads(proc.stdout)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_signups_between_the_upgrades_commits_succeed_and_keep_the_apps_values(db, name):
    shape, app = SHAPES[name]
    db.sql(shape, user="postgres")
    accounts = signup_at_each_revision(db, REVISIONS)
    assert ghost_count(db) == 0
    for revision, uids in accounts.items():
        for uid in uids:
            row = db.sql("SELECT to_jsonb(u) FROM public.users AS u WHERE id = %s", (uid,))[0][0]
            assert {c: row[c] for c in app} == app, (revision, row)
    if name == "chat":
        assert db.value("SELECT count(*) FROM public.user_roles") == db.value("SELECT count(*) FROM auth.users")
    # chat's table has no email column (other users can read it: none is added); the update syncs of
    # ghostsync_0007 to 0009 write it statically, fail there and are recorded, and the signup commits
    recorded = {(op, state) for op, state in db.sql("SELECT operation, sqlstate FROM ghostsync.sync_failures")}
    assert recorded == ({("UPDATE", "42703")} if name == "chat" else set())
    found = status(db)
    assert (found["exit"], found["healthy"]) == (0, True), found["problems"]


@pytest.mark.parametrize("name", ["starter", "on_conflict"])
def test_signups_after_a_rollback_to_ghostsync_0009_succeed(db, name):
    shape, app = SHAPES[name]
    db.sql(shape, user="postgres")
    db.upgrade()
    downgrade(db, "ghostsync_0009")
    with db.auth() as auth:
        uid = auth.signup(email="after-rollback@example.com", confirmed=True, user_meta=META)
    row = db.sql("SELECT to_jsonb(u) FROM public.users AS u WHERE id = %s", (str(uid),))[0][0]
    assert {c: row[c] for c in app} == app, row
    db.upgrade()
    assert ghost_count(db) == 0


def test_an_adopted_table_without_an_app_trigger_gets_its_profiles_at_each_revision(db):
    db.sql(APP_TABLE_WITHOUT_TRIGGER_SQL, user="postgres")
    accounts = signup_at_each_revision(db, REVISIONS)
    for revision, uids in accounts.items():
        if revision == "ghostsync_0001":
            continue  # no sync yet: 0003's backfill writes these
        for uid in uids:
            assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (uid,)) == 1, revision
    assert ghost_count(db) == 0
    found = status(db)
    assert (found["exit"], found["healthy"]) == (0, True), found["problems"]


def test_more_profiles_since_the_resync_than_0010_catches_up_are_left_to_repair(db):
    """0010 writes ghostsync's columns of at most 1000 profiles the app made since 0009's resync began
    (it holds the lock of auth.users meanwhile); beyond that status reports them and repair writes them."""
    db.sql(APP_STARTER_SQL, user="postgres")
    db.upgrade("ghostsync_0009")
    db.sql("INSERT INTO auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, "
           "created_at, updated_at) SELECT '00000000-0000-0000-0000-000000000000', gen_random_uuid(), "
           "'authenticated', 'authenticated', 'many' || g || '@example.com', '{}', '{\"full_name\": \"Many\"}', "
           "now(), now() FROM generate_series(1, 1001) AS g")
    assert ghost_count(db) == 0  # the app's trigger wrote every profile
    proc = db.alembic_cli("upgrade", "head")
    assert proc.returncode == 0, proc.stderr
    assert "more than 1000 accounts were made since the backfill or the resync began: none written here" \
        in proc.stderr, proc.stderr
    found = status(db)
    assert found["exit"] == 1 and [p["code"] for p in found["problems"]] == ["stale_profiles"], found
    assert "1001 profile(s)" in found["problems"][0]["message"]
    assert ghostsync_cli(db, "repair").returncode == 0
    found = status(db)
    assert (found["exit"], found["healthy"]) == (0, True), found["problems"]
    assert db.value("SELECT count(*) FROM public.users WHERE full_name = 'Many' AND email LIKE 'many%'") == 1001


# An app trigger on INSERT that writes no profile: a gate that refuses signups from one domain.
APP_GATE_SQL = """
CREATE FUNCTION public.gate_signups() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF new.email LIKE '%@blocked.example' THEN
    RAISE EXCEPTION 'signups from this domain are closed';
  END IF;
  RETURN new;
END;
$$;
CREATE TRIGGER gate_signups BEFORE INSERT ON auth.users FOR EACH ROW EXECUTE PROCEDURE public.gate_signups();
"""


def test_an_adopted_table_beside_a_gate_gets_every_profile_at_each_revision(db):
    """The gate fires on INSERT but inserts no profile: 0002's to 0008's insert sync writes every one."""
    db.sql(APP_TABLE_WITHOUT_TRIGGER_SQL + APP_GATE_SQL, user="postgres")
    accounts = signup_at_each_revision(db, REVISIONS)
    for revision, uids in accounts.items():
        if revision != "ghostsync_0001":  # no sync yet: 0003's backfill writes these
            assert db.value("SELECT count(*) FROM public.users WHERE id = ANY (%s::uuid[])", (uids,)) == 2, revision
    assert ghost_count(db) == 0
    found = status(db)
    assert (found["exit"], found["healthy"]) == (0, True), found["problems"]


# An app whose trigger inserts the profile of an email signup only: a phone signup gets none from the app,
# while its text (INSERT INTO public.users) makes 0002's to 0008's insert sync leave every profile to it.
APP_EMAIL_PROFILES_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  nickname text
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION public.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF new.email IS NOT NULL THEN
    INSERT INTO public.users (id, nickname) VALUES (new.id, split_part(new.email, '@', 1));
  END IF;
  RETURN new;
END;
$$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users FOR EACH ROW EXECUTE PROCEDURE public.handle_new_user();
"""


def phone_signup(db, n: int) -> str:
    with db.auth() as auth:
        return str(auth.signup(phone=f"+1555000{n:04d}", confirmed=True))


def test_profiles_the_apps_trigger_does_not_write_are_there_by_the_end_of_the_upgrade(db):
    """Phone signups at each revision: 0003's backfill writes those before it, 0010's catch-up the ones after."""
    db.sql(APP_EMAIL_PROFILES_SQL, user="postgres")
    for n, revision in enumerate(REVISIONS):
        db.upgrade(revision)
        phone_signup(db, n)
    assert ghost_count(db) == 0
    found = status(db)
    assert (found["exit"], found["healthy"]) == (0, True), found["problems"]


def test_the_catch_up_counts_from_the_last_backfill_that_ran_not_a_dry_run(db):
    """A `ghostsync backfill --dry-run` after 0009 writes an audit row of the backfill's job; the catch-up's
    starting point is the last run that wrote profiles (succeeded or partial), so the ghost made before the
    dry run is written all the same."""
    db.sql(APP_EMAIL_PROFILES_SQL, user="postgres")
    db.upgrade("ghostsync_0009")
    uid = phone_signup(db, 1)
    assert ghost_count(db) == 1
    assert ghostsync_cli(db, "backfill", "--dry-run").returncode == 0
    proc = db.alembic_cli("upgrade", "head")
    assert proc.returncode == 0, proc.stderr
    assert "ghostsync: 1 account(s) made since the backfill or the resync began written, 0 failed" in proc.stderr
    assert ghost_count(db) == 0 and db.value("SELECT count(*) FROM public.users WHERE id = %s", (uid,)) == 1


def test_an_app_trigger_keyed_to_the_profile_works_at_each_revision_up_to_0009(db):
    """The app writes only rows keyed to the profile (its key checked at once), no profile: it relies on
    ghostsync's insert sync, which keeps writing the profile first at every revision up to 0009."""
    db.sql(APP_TABLE_WITHOUT_TRIGGER_SQL + APP_KEYED_ROWS_SQL, user="postgres")
    db.upgrade("ghostsync_0001")
    signup_at_each_revision(db, REVISIONS[1:9])
    assert db.value("SELECT count(*) FROM public.user_settings") == 16
    proc = db.alembic_cli("upgrade", "head")
    assert proc.returncode != 0 and "whose key user_settings_user_id_fkey to public.users is checked at once" \
        in proc.stdout + proc.stderr, proc.stderr
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0009"


# Adopted tables whose deletes are the app's (issue 18 §3), each a hard delete through the auth service at
# every revision: (the app's table, whether its own BEFORE DELETE trigger keeps the account, what must hold).
DELETE_SHAPES = {
    # no key to auth.users: the app keeps its rows (app_rows_kept from 0011 on)
    "no key": (APP_PROFILES_WITHOUT_FK_SQL + "ALTER TABLE public.users ADD COLUMN full_name text;", False, "kept"),
    # a key that does not cascade: the delete is refused, as without ghostsync
    "key without cascade": (APP_KEY_WITHOUT_CASCADE_SQL, False, "refused"),
    # the soft-delete pattern beside a cascading key, and beside none
    "starter, soft delete": (APP_STARTER_SQL, True, "kept"),
    "no key, soft delete": (APP_PROFILES_WITHOUT_FK_SQL + "ALTER TABLE public.users ADD COLUMN full_name text;",
                            True, "kept"),
}


@pytest.mark.parametrize("name", list(DELETE_SHAPES))
def test_hard_deletes_between_the_upgrades_commits_keep_the_apps_rules(db, name):
    """From 0007 to 0010 the delete syncs removed an adopted table's rows (or its app columns, beside a soft
    delete) where the app's table keeps them, and let through deletes the app's key refuses; 0011 changed
    that. Now every revision on the way does as 0011 does."""
    shape, soft, expected = DELETE_SHAPES[name]
    db.sql(shape, user="postgres")
    if soft:
        db.sql(APP_SOFT_DELETE_SQL, user="supabase_admin")
    outcomes = {}
    for revision in REVISIONS:
        db.upgrade(revision)
        with db.auth() as auth:
            uid = str(auth.signup(email=f"{revision}@example.com", confirmed=True))
        if db.value("SELECT count(*) FROM public.users WHERE id = %s", (uid,)) == 0:  # 0001: no sync yet
            db.sql("INSERT INTO public.users (id) VALUES (%s)", (uid,), user="postgres")
        db.sql("UPDATE public.users SET full_name = 'App' WHERE id = %s", (uid,), user="postgres")
        try:
            with db.auth() as auth:
                auth.hard_delete(uid)
        except psycopg2.errors.ForeignKeyViolation:
            outcomes[revision] = "refused"
            continue
        rows = db.sql("SELECT full_name FROM public.users WHERE id = %s", (uid,))
        outcomes[revision] = "kept" if rows == [("App",)] else f"profile {rows}"
    assert outcomes == dict.fromkeys(REVISIONS, expected)
