"""Hard deletes keep the app's rules (ghostsync_0011; issue 18 §3).

- An app's BEFORE DELETE trigger on auth.users that keeps the account (a soft
  delete: sets deleted_at, returns NULL), named to sort after ghostsync's:
  no profile is touched, on the table ghostsync created as on an adopted one.
  Another column's key to auth.users (an app's ``referred_by ... ON DELETE SET
  NULL``) does not count as the profile's key.
- The app's own key on public.users(id) that does not cascade refuses a hard
  delete with ghostsync as it does without (status explains it).
- An adopted table without a key on id keeps its rows on a hard delete: status
  reports them as the app's (``app_rows_kept``), not as orphans, and repair
  leaves them.
- An app table whose key to ghostsync's public.users is checked at COMMIT
  (DEFERRABLE INITIALLY DEFERRED, or deferred by the caller): the anonymous-user
  cleanup succeeds; the profile that cannot go is recorded; the caller's SET
  CONSTRAINTS state is its own again after the delete.
- A ``ghostsync.*`` setting a client leaves in a pooled session (PgBouncer,
  transaction mode, pool size 1) changes nothing in another client's delete.
- TRUNCATE auth.users CASCADE still empties the table ghostsync created (its
  key, which did that, is gone); downgrade puts back 0008's delete sync and
  the key exactly, refused with one line over an orphan.
"""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest
from alembic.util import CommandError
from sqlalchemy import create_engine

from ghostsync import chain, status
from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.testing.pgbouncer import ThrowawayPgBouncer
from ghostsync.testing.supabase import APP_PROFILES_WITHOUT_FK_SQL
from ghostsync.urls import normalize
from tests.catalog import fingerprint
from tests.seeding import failures, ghostsync_cli

# issue 18's cases hold on every role setup of Supabase (tests/conftest.py)
ON_EVERY_ROLE_SETUP = True

# The app's own public.users whose key on id does not cascade (the app deletes a profile itself
# before its account), with an app column of its own.
APP_KEY_WITHOUT_CASCADE_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id),
  email text,
  email_verified boolean NOT NULL DEFAULT false,
  deleted_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  full_name text
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""

# App columns on the table ghostsync created: a name, and who referred the user (a key to
# auth.users on another column than id, which says nothing about deleting the profile).
APP_COLUMNS_ON_CREATED_SQL = """
ALTER TABLE public.users ADD COLUMN full_name text,
  ADD COLUMN referred_by uuid REFERENCES auth.users (id) ON DELETE SET NULL;
"""

# The soft-delete pattern: a BEFORE DELETE trigger on auth.users that keeps the account,
# marking it deleted instead. Its name sorts after ghostsync's triggers.
APP_SOFT_DELETE_SQL = """
CREATE FUNCTION public.soft_delete_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE auth.users SET deleted_at = pg_catalog.now() WHERE id = OLD.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER soft_delete_user BEFORE DELETE ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.soft_delete_user();
"""

# An app table, in a schema of its own, whose key to public.users is checked at COMMIT.
APP_DEFERRED_REFERENCE_SQL = """
CREATE SCHEMA app;
CREATE TABLE app.memberships (
  user_id uuid NOT NULL,
  team text NOT NULL,
  CONSTRAINT memberships_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users (id) {deferral}
);
GRANT USAGE ON SCHEMA app TO supabase_auth_admin;
GRANT SELECT, INSERT, DELETE ON app.memberships TO supabase_auth_admin;
"""

CLEANUP = ("delete from users where id in (select id from users where created_at < now() - interval '30 days' "
           "and is_anonymous is true limit 100 for update skip locked)")


def cleanup(db, deferral: str) -> int:
    """The auth service's cleanup statement in a transaction of its own (as GoTrue's cleanup runs it);
    where the key is INITIALLY IMMEDIATE the caller defers every constraint first. Before COMMIT the
    caller inserts a row that references no profile and removes it again: it passes only while the key
    is still deferred, i.e. while the caller's SET CONSTRAINTS state is its own after the delete."""
    conn = psycopg2.connect(db.url(AUTH_ROLE))
    try:
        with conn.cursor() as cur:
            cur.execute("SET search_path = auth")
            if deferral.endswith("INITIALLY IMMEDIATE"):
                cur.execute("SET CONSTRAINTS ALL DEFERRED")
            cur.execute(CLEANUP)
            deleted = cur.rowcount
            cur.execute("INSERT INTO app.memberships VALUES (gen_random_uuid(), 'fixed before commit')")
            cur.execute("DELETE FROM app.memberships WHERE team = 'fixed before commit'")
        conn.commit()
        return int(deleted)
    finally:
        conn.close()


def collect(db, **kwargs):
    engine = create_engine(normalize(db.url()))
    try:
        with engine.connect() as conn:
            return status.collect(conn, **kwargs)
    finally:
        engine.dispose()


def codes(findings) -> set[str]:
    return {f.code for f in findings}


def profile(db, uid):
    rows = db.sql("SELECT full_name, deleted_at IS NOT NULL FROM public.users WHERE id = %s", (str(uid),))
    return rows[0] if rows else None


def account_count(db, uid) -> int:
    return int(db.value("SELECT count(*) FROM auth.users WHERE id = %s", (str(uid),)))


@pytest.mark.parametrize("shape", ["created", "adopted-key-without-cascade"])
def test_a_soft_delete_by_the_apps_trigger_touches_no_profile(db, shape):
    if shape == "created":
        db.upgrade()
        db.sql(APP_COLUMNS_ON_CREATED_SQL, user="postgres")
    else:
        db.sql(APP_KEY_WITHOUT_CASCADE_SQL, user="postgres")
        db.upgrade()
    db.sql(APP_SOFT_DELETE_SQL, user="supabase_admin")
    with db.auth() as auth:
        referrer = auth.signup(email="referrer@example.com")
        uid = auth.signup(email="kept@example.com")
    db.sql("UPDATE public.users SET full_name = 'Kept Name' WHERE id = %s", (str(uid),), user="postgres")
    if shape == "created":
        db.sql("UPDATE public.users SET referred_by = %s WHERE id = %s", (str(referrer), str(uid)), user="postgres")
    with db.auth() as auth:
        auth.hard_delete(uid)  # the app's trigger keeps the account, marked deleted
    assert account_count(db, uid) == 1
    assert db.value("SELECT deleted_at IS NOT NULL FROM auth.users WHERE id = %s", (str(uid),)) is True
    assert profile(db, uid) == ("Kept Name", True), "the profile is the same row, deleted_at synced"
    assert failures(db) == []
    found = collect(db)
    assert found.healthy, found.problems
    assert (found.ghosts, found.orphans, found.stale_profiles) == (0, 0, 0)


def test_the_apps_key_without_cascade_refuses_a_hard_delete_as_it_does_without_ghostsync(db):
    db.sql(APP_KEY_WITHOUT_CASCADE_SQL, user="postgres")
    with db.auth() as auth:
        before = auth.signup(email="before@example.com")
    db.sql("INSERT INTO public.users (id, email, full_name) VALUES (%s, 'before@example.com', 'Before')",
           (str(before),), user="postgres")
    with db.auth() as auth, pytest.raises(psycopg2.errors.ForeignKeyViolation):
        auth.hard_delete(before)  # without ghostsync: the app's key refuses it
    db.upgrade()
    with db.auth() as auth:
        after = auth.signup(email="after@example.com")
        for uid in (before, after):
            with pytest.raises(psycopg2.errors.ForeignKeyViolation):
                auth.hard_delete(uid)  # with ghostsync: the same rule
    assert account_count(db, before) == account_count(db, after) == 1
    assert profile(db, before) == ("Before", False)
    assert failures(db) == []
    found = collect(db)
    assert found.healthy
    assert "app_key_refuses_deletes" in codes(found.warnings)
    [warning] = [w for w in found.warnings if w.code == "app_key_refuses_deletes"]
    assert "users_id_fkey" in warning.message and "ON DELETE NO ACTION" in warning.message
    # the app's way: delete the profile first, then the account
    db.sql("DELETE FROM public.users WHERE id = %s", (str(after),), user="postgres")
    with db.auth() as auth:
        auth.hard_delete(after)
    assert account_count(db, after) == 0


def test_a_key_on_another_column_is_not_the_profiles_key(db):
    db.upgrade()
    db.sql(APP_COLUMNS_ON_CREATED_SQL, user="postgres")
    found = collect(db, quick=True)
    assert "app_key_refuses_deletes" not in codes(found.warnings)
    with db.auth() as auth:
        uid = auth.signup(email="gone@example.com")
        auth.hard_delete(uid)
    assert account_count(db, uid) == 0 and profile(db, uid) is None
    assert failures(db) == []


def test_an_adopted_table_without_a_key_keeps_the_apps_rows(db):
    db.sql(APP_PROFILES_WITHOUT_FK_SQL, user="postgres")
    db.upgrade()
    with db.auth() as auth:
        stays = auth.signup(email="stays@example.com")
        uid = auth.signup(email="left@example.com")
        auth.hard_delete(uid)
        for _ in range(3):
            auth.signup_anonymous()
        db.sql("UPDATE auth.users SET created_at = now() - interval '40 days' WHERE is_anonymous",
               user="supabase_auth_admin")
        assert auth.cleanup_anonymous_users() == 3
    assert account_count(db, uid) == 0
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(uid),)) == 1, "the app's row stays"
    assert db.value("SELECT count(*) FROM public.users") == 5
    assert failures(db) == []
    found = collect(db)
    assert found.healthy, found.problems
    assert found.orphans == 0
    [kept] = [w for w in found.warnings if w.code == "app_rows_kept"]
    assert kept.message.startswith("4 profile(s) outlive their deleted account")
    dry = ghostsync_cli(db, "repair", "--dry-run")
    assert "delete 0 orphan(s)" in dry.stdout, dry.stdout + dry.stderr
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 orphan(s) deleted" in proc.stdout
    assert db.value("SELECT count(*) FROM public.users") == 5
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(stays),)) == 1


@pytest.mark.parametrize("deferral", ["DEFERRABLE INITIALLY DEFERRED", "DEFERRABLE INITIALLY IMMEDIATE"],
                         ids=["initially-deferred", "deferred-by-the-caller"])
def test_the_cleanup_succeeds_past_an_app_key_checked_at_commit(db, deferral):
    db.upgrade()  # public.users is ghostsync's
    db.sql(APP_DEFERRED_REFERENCE_SQL.format(deferral=deferral), user="postgres")
    with db.auth() as auth:
        member, other = auth.signup_anonymous(), auth.signup_anonymous()
    db.sql("INSERT INTO app.memberships VALUES (%s, 'red')", (str(member),), user="postgres")
    db.sql("UPDATE auth.users SET created_at = now() - interval '40 days' WHERE is_anonymous",
           user="supabase_auth_admin")
    assert cleanup(db, deferral) == 2  # no auth write fails because of ghostsync
    assert db.value("SELECT count(*) FROM auth.users") == 0
    # one DELETE, one subtransaction: its profiles stay together, each recorded with the key's error
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(member),)) == 1
    recorded = {(user_id, operation, sqlstate) for user_id, operation, sqlstate, _m, _n in failures(db)}
    assert recorded == {(str(member), "DELETE", "23503"), (str(other), "DELETE", "23503")}
    assert all("memberships_user_id_fkey" in message for _u, _o, _s, message, _n in failures(db))
    found = collect(db)
    assert (found.orphans, found.failed_syncs) == (2, 2)
    # the next batch, without a member, goes through whole
    with db.auth() as auth:
        later = auth.signup_anonymous()
    db.sql("UPDATE auth.users SET created_at = now() - interval '40 days' WHERE id = %s", (str(later),),
           user="supabase_auth_admin")
    assert cleanup(db, deferral) == 1
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(later),)) == 0
    assert len(failures(db)) == 2
    # repair takes each recorded profile on its own: the one nothing references goes, the member's is named
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert str(member) in proc.stdout + proc.stderr
    assert db.value("SELECT count(*) FROM public.users") == 1
    assert [user_id for user_id, *_ in failures(db)] == [str(member)]


def test_a_cleanup_of_100_accounts_takes_one_subtransaction_with_an_xid(db):
    """The statement trigger deletes the cleanup's 100 profiles in one subtransaction, and its nested
    check of the app's deferrable keys writes nothing: far from the 64-entry subtransaction cache. Counted
    as the xids the cleanup's transaction took (its own first, then one per subtransaction that wrote;
    a subtransaction's xid lock ends with it, and PostgreSQL 15 has no pg_stat_get_backend_subxact());
    nothing else writes on this test's server meanwhile."""
    db.upgrade()
    db.sql(APP_DEFERRED_REFERENCE_SQL.format(deferral="DEFERRABLE INITIALLY DEFERRED"), user="postgres")
    with db.auth() as auth:
        for _ in range(100):
            auth.signup_anonymous()
    db.sql("UPDATE auth.users SET created_at = now() - interval '40 days'", user="supabase_auth_admin")
    conn = psycopg2.connect(db.url(AUTH_ROLE))
    try:
        with conn.cursor() as cur:
            cur.execute("SET search_path = auth")
            cur.execute(CLEANUP)
            assert cur.rowcount == 100
            cur.execute("SELECT pg_catalog.pg_current_xact_id()::text::bigint")
            own = cur.fetchone()[0]
        conn.commit()
    finally:
        conn.close()
    following = db.value("SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint")
    assert following - own == 2, "the transaction's own xid and the delete sync's one subtransaction"
    assert db.value("SELECT count(*) FROM public.users") == 0 and failures(db) == []


def test_a_ghostsync_setting_left_in_a_pooled_session_changes_no_delete(db):
    db.sql(APP_KEY_WITHOUT_CASCADE_SQL, user="postgres")
    db.upgrade()
    with db.auth() as auth:
        first, second = auth.signup(email="first@example.com"), auth.signup(email="second@example.com")

    def outcome(auth: AuthService, uid) -> str:
        try:
            auth.hard_delete(uid)
        except psycopg2.Error as exc:
            return type(exc).__name__
        return "deleted"

    with ThrowawayPgBouncer(db.server.host, db.server.port, pool_size=1) as bouncer:
        url = bouncer.url(db.name, AUTH_ROLE)
        with AuthService(url) as auth:
            unset = outcome(auth, first)
        other = psycopg2.connect(url)  # another client of the same pool sets a session-level value
        try:
            other.autocommit = True
            with other.cursor() as cur:
                cur.execute("SET ghostsync.profile_key_blocks_delete = 'false'")
        finally:
            other.close()
        with AuthService(url) as auth:
            with auth.conn.cursor() as cur:
                cur.execute("SELECT current_setting('ghostsync.profile_key_blocks_delete', true)")
                assert cur.fetchone() == ("false",), "the pooled server session carries the setting"
            auth.conn.rollback()
            leaked = outcome(auth, second)
    assert leaked == unset
    assert account_count(db, first) == account_count(db, second)


def test_truncate_of_auth_users_empties_ghostsyncs_table_as_its_key_did(db):
    db.upgrade()  # ghostsync's public.users, without the key that made TRUNCATE ... CASCADE empty it
    with db.auth() as auth:
        for i in range(3):
            auth.signup(email=f"t{i}@example.com")
    db.sql("TRUNCATE auth.users CASCADE")
    assert db.value("SELECT count(*) FROM public.users") == 0
    found = collect(db)
    assert found.healthy and found.orphans == 0


def below_0011() -> str:
    return str(chain.script_directory().get_revision("ghostsync_0011").down_revision)


def test_downgrade_puts_back_the_previous_delete_sync_and_key_exactly(db):
    db.upgrade(below_0011())
    before = fingerprint(db)
    db.upgrade()
    assert fingerprint(db) != before
    db.downgrade(below_0011())
    assert fingerprint(db) == before


def test_downgrade_over_an_orphan_is_one_line_and_changes_nothing(db):
    db.upgrade()
    db.sql("SET session_replication_role = replica; INSERT INTO public.users (id, email) "
           "VALUES (gen_random_uuid(), 'orphan@example.com')")
    before = fingerprint(db)
    with pytest.raises(CommandError) as refused:
        db.downgrade(below_0011())
    assert str(refused.value).startswith("ghostsync: 1 profile(s) of public.users have no account (orphans)")
    assert "run `ghostsync repair`" in str(refused.value)
    assert fingerprint(db) == before
    assert ghostsync_cli(db, "repair").returncode == 0
    db.downgrade(below_0011())
    assert db.value("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'public.users'::regclass "
                    "AND contype = 'f'") == "FOREIGN KEY (id) REFERENCES auth.users(id) ON DELETE CASCADE"
