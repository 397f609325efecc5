"""The "hosted" role setup's model of supautils' drop_trigger_grants, against what supautils does
(supautils src/drop_trigger_grants.c, supautils.c T_DropStmt): postgres may drop triggers on the
listed auth tables; on its way it takes ACCESS EXCLUSIVE on the target first, then on the listed
tables in config order up to the target, each honouring lock_timeout and held to the end of the
transaction; no role membership is left behind. "current" (no supautils) fails with
PostgreSQL's own "must be owner of relation users"; "membership" drops directly."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.testing.fixtures import supabase_database

LISTED_BEFORE_USERS = ["auth.audit_log_entries", "auth.identities", "auth.refresh_tokens", "auth.sessions"]


@pytest.fixture
def hosted(supabase_pg_major, supabase_servers):
    with supabase_database(supabase_servers.get(supabase_pg_major, "hosted")) as database:
        prepare(database)
        yield database


def prepare(db, triggers=("t1", "t2")):
    db.sql("CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
           user="postgres")
    for name in triggers:
        db.sql(f"CREATE TRIGGER {name} AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.noop()",
               user="postgres")


def connect(db, user="postgres"):
    return psycopg2.connect(db.url(user))


def member(db) -> bool:
    return db.value("SELECT pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER')")


def triggers(db) -> set[str]:
    return {r[0] for r in db.sql("SELECT tgname FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                                 "AND NOT tgisinternal")}


def exclusive_locks(cur) -> list[str]:
    cur.execute("SELECT n.nspname || '.' || c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE l.pid = pg_backend_pid() "
                "AND l.mode = 'AccessExclusiveLock' AND l.granted AND n.nspname IN ('auth', 'public') "
                "AND c.relkind = 'r' ORDER BY 1")
    return [r[0] for r in cur.fetchall()]


def locks_of(db, pid):
    """(table, mode, granted) of every table lock ``pid`` holds or waits for."""
    return db.sql("SELECT n.nspname || '.' || c.relname, l.mode, l.granted FROM pg_locks l "
                  "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE l.pid = %s AND c.relkind = 'r' ORDER BY l.granted DESC, 1", (pid,))


def wait_for_waiting(db, pid, timeout=10.0):
    """The locks of ``pid`` once it waits for one (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        locks = locks_of(db, pid)
        if any(not granted for _, _, granted in locks):
            return locks
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_postgres_drops_a_trigger_on_auth_users_and_keeps_no_membership(hosted):
    db = hosted
    conn = connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TRIGGER t1 ON auth.users")
            cur.execute("SELECT pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER'), current_user")
            assert cur.fetchone() == (False, "postgres"), "the owner's role is lent for the statement only"
            # supautils' locks: the target and the listed tables before it, held to the end of the transaction
            assert exclusive_locks(cur) == [*LISTED_BEFORE_USERS, "auth.users"]
        conn.commit()
    finally:
        conn.close()
    assert triggers(db) == {"t2"}
    assert member(db) is False
    assert db.value("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                    "WHERE r.rolname = 'supabase_auth_admin'") == 0


def test_several_drops_in_one_query_string_and_in_a_do_block(hosted):
    db = hosted
    prepare_more = "CREATE TRIGGER t3 AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.noop()"
    db.sql(prepare_more, user="postgres")
    db.sql("-- DROP TRIGGER nothing ON auth.sessions (a comment names no target)\n"
           "DROP TRIGGER IF EXISTS t1 ON auth.users; DROP TRIGGER IF EXISTS t2 ON \"auth\".\"users\";",
           user="postgres")
    assert triggers(db) == {"t3"}
    db.sql("DO $$ BEGIN EXECUTE pg_catalog.format('DROP TRIGGER %I ON auth.users', 't3'); END $$", user="postgres")
    assert triggers(db) == set()
    assert member(db) is False


def test_failed_or_aborted_drops_leave_no_membership(hosted):
    db = hosted
    with pytest.raises(psycopg2.errors.UndefinedObject):
        db.sql("DROP TRIGGER missing ON auth.users", user="postgres")
    assert member(db) is False
    db.sql("DROP TRIGGER IF EXISTS missing ON auth.users", user="postgres")  # a NOTICE, then the end trigger
    assert member(db) is False
    conn = connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TRIGGER t1 ON auth.users")
        conn.rollback()  # the transaction that dropped it is rolled back
    finally:
        conn.close()
    assert triggers(db) == {"t1", "t2"}
    assert member(db) is False
    # in a savepoint, as ghostsync's guarded statements run: the failed drop rolls back alone
    conn = connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SAVEPOINT s")
            with pytest.raises(psycopg2.errors.UndefinedObject):
                cur.execute("DROP TRIGGER missing ON auth.users")
            cur.execute("ROLLBACK TO SAVEPOINT s")
            cur.execute("SELECT pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER')")
            assert cur.fetchone() == (False,)
            cur.execute("DROP TRIGGER t2 ON auth.users")
        conn.commit()
    finally:
        conn.close()
    assert triggers(db) == {"t1"}
    assert member(db) is False


def test_a_lock_on_auth_sessions_makes_the_drop_wait_with_auth_users_already_locked(hosted):
    """Lock order: auth.users (the target) first, then audit_log_entries, identities, refresh_tokens;
    it waits for auth.sessions, up to lock_timeout, then fails with 55P03, taking back nothing it did."""
    db = hosted
    holder = connect(db, AUTH_ROLE)
    dropper = connect(db)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM auth.sessions")  # ACCESS SHARE, held by the open transaction
        seen: dict[str, object] = {}
        pid = dropper.get_backend_pid()
        watcher = threading.Thread(target=lambda: seen.update(locks=wait_for_waiting(db, pid)), daemon=True)
        watcher.start()
        began = time.monotonic()
        with dropper.cursor() as cur:
            cur.execute("SET lock_timeout = '1500ms'")
            with pytest.raises(psycopg2.errors.LockNotAvailable) as err:
                cur.execute("DROP TRIGGER t1 ON auth.users")
        waited = time.monotonic() - began
        dropper.rollback()
        watcher.join(timeout=15)
        assert err.value.pgcode == "55P03"
        assert 1.4 <= waited < 10
        locks = seen["locks"]
        held = [table for table, mode, granted in locks if granted and mode == "AccessExclusiveLock"]
        waiting = [(table, mode) for table, mode, granted in locks if not granted]
        assert held == sorted(["auth.users", *LISTED_BEFORE_USERS[:3]])
        assert waiting == [("auth.sessions", "AccessExclusiveLock")]
    finally:
        holder.rollback()
        holder.close()
        dropper.close()
    assert triggers(db) == {"t1", "t2"}
    assert member(db) is False


def test_a_busy_auth_users_is_locked_first(hosted):
    """With auth.users busy, the drop waits for it before touching any other listed table."""
    db = hosted
    holder = connect(db, AUTH_ROLE)
    dropper = connect(db)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM auth.users")
        pid = dropper.get_backend_pid()
        seen: dict[str, object] = {}
        watcher = threading.Thread(target=lambda: seen.update(locks=wait_for_waiting(db, pid)), daemon=True)
        watcher.start()
        with dropper.cursor() as cur:
            cur.execute("SET lock_timeout = '1s'")
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                cur.execute("DROP TRIGGER t1 ON auth.users")
        dropper.rollback()
        watcher.join(timeout=15)
        locks = seen["locks"]
        assert [(t, m) for t, m, granted in locks if not granted] == [("auth.users", "AccessExclusiveLock")]
        assert not [t for t, m, granted in locks if granted and t.startswith("auth.")]
    finally:
        holder.rollback()
        holder.close()
        dropper.close()


def test_sign_ins_wait_while_the_drop_waits(hosted):
    """While the drop holds auth.audit_log_entries and waits for auth.sessions, a sign-in (INSERT into
    audit_log_entries) waits too: with the auth service's own lock_timeout it fails."""
    db = hosted
    with db.auth() as auth:
        uid = auth.signup(email="waits@example.com", confirmed=True)
    holder = connect(db, AUTH_ROLE)
    dropper = connect(db)
    result: dict[str, BaseException | None] = {}
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM auth.sessions")

        def drop():
            try:
                with dropper.cursor() as cur:
                    cur.execute("SET lock_timeout = '3s'")
                    cur.execute("DROP TRIGGER t1 ON auth.users")
                dropper.commit()
                result["drop"] = None
            except psycopg2.Error as exc:
                dropper.rollback()
                result["drop"] = exc

        thread = threading.Thread(target=drop, daemon=True)
        thread.start()
        wait_for_waiting(db, dropper.get_backend_pid())
        with AuthService(db.url(AUTH_ROLE), options="-c lock_timeout=300ms") as auth, \
                pytest.raises(psycopg2.errors.LockNotAvailable):
            auth.sign_in(uid)
        holder.rollback()  # the drop goes through now
        thread.join(timeout=15)
        assert result["drop"] is None
    finally:
        holder.close()
        dropper.close()
    assert triggers(db) == {"t2"}
    assert member(db) is False


def test_a_drop_on_postgres_own_table_locks_the_whole_list_too(hosted):
    """Not in the grant list: supautils locks the target, then every listed table, then PostgreSQL's
    ownership check decides (postgres owns it)."""
    db = hosted
    db.sql("CREATE TABLE public.mine (x int); CREATE TRIGGER own BEFORE INSERT ON public.mine "
           "FOR EACH ROW EXECUTE FUNCTION public.noop()", user="postgres")
    conn = connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TRIGGER own ON public.mine")
            assert exclusive_locks(cur) == sorted([*LISTED_BEFORE_USERS, "auth.users", "public.mine"])
        conn.commit()
    finally:
        conn.close()


def test_other_roles_and_missing_tables(hosted):
    db = hosted
    # the owner drops directly; it has no grant list, so only its target is locked
    conn = connect(db, AUTH_ROLE)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TRIGGER t1 ON auth.users")
            assert exclusive_locks(cur) == ["auth.users"]
        conn.commit()
    finally:
        conn.close()
    # a role without a grant list gets PostgreSQL's error
    db.sql("CREATE ROLE outsider LOGIN; GRANT USAGE ON SCHEMA auth TO outsider")
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="must be owner of relation users"):
            db.sql("DROP TRIGGER t2 ON auth.users", user="outsider")
    finally:
        db.sql("REVOKE USAGE ON SCHEMA auth FROM outsider; DROP ROLE outsider")
    # supautils looks the target up with missing_ok=false (inferred from its source): IF EXISTS does not help
    with pytest.raises(psycopg2.errors.UndefinedTable, match=r'relation "public\.nowhere" does not exist'):
        db.sql("DROP TRIGGER IF EXISTS t ON public.nowhere", user="postgres")
    # SET ROLE counts: supabase_admin acting as postgres is postgres
    conn = connect(db, "supabase_admin")
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE postgres")
            cur.execute("DROP TRIGGER t2 ON auth.users")
            assert exclusive_locks(cur) == [*LISTED_BEFORE_USERS, "auth.users"]
        conn.commit()
    finally:
        conn.close()
    assert member(db) is False


@pytest.mark.parametrize("roles", ["current", "membership"])
def test_without_supautils(roles, supabase_pg_major, supabase_servers):
    with supabase_database(supabase_servers.get(supabase_pg_major, roles)) as db:
        prepare(db, triggers=("t1",))
        conn = connect(db)
        try:
            with conn.cursor() as cur:
                if roles == "current":
                    with pytest.raises(psycopg2.errors.InsufficientPrivilege) as err:
                        cur.execute("DROP TRIGGER t1 ON auth.users")
                    assert err.value.pgcode == "42501"
                    assert str(err.value).startswith("must be owner of relation users")
                    conn.rollback()
                else:
                    cur.execute("DROP TRIGGER t1 ON auth.users")
                    assert exclusive_locks(cur) == ["auth.users"], "no supautils: nothing else is locked"
                    conn.commit()
        finally:
            conn.close()
        assert triggers(db) == ({"t1"} if roles == "current" else set())
