"""Every write ghostsync makes ends with the profile equal to the committed auth row, whatever commits between.

Each interleaving is forced: one side's transaction is held open (or held
inside ghostsync's write by an app trigger that waits on an advisory lock),
the other side is started in a thread and the test waits until the server
reports it waiting on a lock, then the first side is released. A control
run on the revision before the fix shows the test can fail.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from ghostsync import backfill, chain, repair
from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.urls import normalize
from tests.interleave import ROW_LOCK, Waiting, url_named, wait_for_lock
from tests.seeding import ghost_count

# An app trigger on public.users that waits on advisory lock 4242: holding that lock
# holds any writer of a profile in the middle of its transaction.
PROFILE_WRITE_GATE = """
CREATE FUNCTION public.app_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$;
CREATE TRIGGER app_gate BEFORE INSERT OR UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION public.app_gate();
"""


def admin(db) -> str:
    return db.url("supabase_admin")


def auth_row(db, uid) -> tuple:
    return db.sql("SELECT email, email_confirmed_at IS NOT NULL, deleted_at FROM auth.users WHERE id = %s",
                  (str(uid),))[0]


def profile_row(db, uid) -> tuple | None:
    rows = db.sql("SELECT email, email_verified, deleted_at FROM public.users WHERE id = %s", (str(uid),))
    return rows[0] if rows else None


def make_ghost(db, email: str) -> str:
    """An unconfirmed account written while the signup trigger did not fire (as a restore would)."""
    return db.value(
        "SET session_replication_role = replica; "
        "INSERT INTO auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, "
        "created_at, updated_at, is_sso_user, is_anonymous) VALUES ('00000000-0000-0000-0000-000000000000', "
        "gen_random_uuid(), 'authenticated', 'authenticated', %s, '{}', '{}', now(), now(), false, false) "
        "RETURNING id::text", (email,))


class OpenBackfillBatch:
    """One batch of ``ghostsync backfill`` run in a transaction the test commits when it chooses."""

    def __init__(self, db) -> None:
        revision = db.value("SELECT version_num FROM public.alembic_version")
        self.statements = backfill.statements_for(chain.declared_at(revision))
        self.engine = create_engine(normalize(url_named(db.url(), "held-backfill")))
        self.conn = self.engine.connect()

    def run(self) -> int:
        run_id = self.conn.execute(self.statements.start, {"job": "backfill_ghost_users", "run_mode": "test"})
        row = self.conn.execute(self.statements.batch,
                                {"run_id": run_id.scalar_one(), "after": None, "batch_size": 1000}).one()
        return int(row.repaired)

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


@pytest.mark.parametrize("revision", ["head", "ghostsync_0007"])
def test_confirmation_while_a_backfill_batch_writes_the_profile(db, revision):
    db.upgrade(revision)
    uid = make_ghost(db, "late.confirm@example.com")
    batch = OpenBackfillBatch(db)
    try:
        assert batch.run() == 1  # the profile is written (email_verified false), not yet committed
        with AuthService(url_named(db.url(AUTH_ROLE), "confirming")) as auth:
            confirming = Waiting(lambda: auth.confirm_email(uid))
            wait_for_lock(admin(db), "confirming")  # the update sync waits for the batch's profile
            batch.commit()
            confirming.result()
    finally:
        batch.close()
    email, verified, _ = auth_row(db, uid)
    if revision == "head":
        assert profile_row(db, uid)[:2] == (email, verified) == ("late.confirm@example.com", True)
    else:  # the control: 0007's update sync kept the batch's stale copy for good
        assert profile_row(db, uid)[:2] == ("late.confirm@example.com", False)


@pytest.mark.parametrize("order", ["backfill first", "delete first"])
def test_no_orphan_when_an_account_is_deleted_while_the_backfill_repairs_it(db, order):
    db.upgrade()  # ghostsync's public.users has no foreign key: nothing but ghostsync removes the profile
    uid = make_ghost(db, "leaving@example.com")
    with AuthService(url_named(db.url(AUTH_ROLE), "deleting")) as auth:
        if order == "backfill first":
            batch = OpenBackfillBatch(db)
            try:
                assert batch.run() == 1
                deleting = Waiting(lambda: auth.hard_delete(uid))
                wait_for_lock(admin(db), "deleting", events=ROW_LOCK)  # the ghost is locked FOR KEY SHARE
                batch.commit()
                deleting.result()
            finally:
                batch.close()
        else:
            held = psycopg2.connect(db.url(AUTH_ROLE))
            try:
                with held.cursor() as cur:
                    cur.execute("DELETE FROM auth.users WHERE id = %s", (uid,))
                batch = OpenBackfillBatch(db)
                try:
                    repairing = Waiting(batch.run)
                    wait_for_lock(admin(db), "held-backfill")
                    held.commit()
                    assert repairing.result() == 0, "the deleted account is not repaired"
                    batch.commit()
                finally:
                    batch.close()
            finally:
                held.close()
    assert db.value("SELECT count(*) FROM auth.users WHERE id = %s", (uid,)) == 0
    assert profile_row(db, uid) is None, "no profile outlives its account"


@pytest.mark.parametrize("order", ["repair first", "email change first"])
def test_repair_never_writes_an_old_email_over_a_new_one(db, order):
    db.upgrade()
    with db.auth() as auth:
        uid = auth.signup(email="before@example.com", confirmed=True)
    # a recorded failed sync for this user, so `repair` rewrites the profile
    db.sql("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) "
           "VALUES (%s, 'UPDATE', '23505', 'simulated')", (str(uid),))
    engine = create_engine(normalize(url_named(db.url(), "repairing")))
    declared = chain.declared_at(db.value("SELECT version_num FROM public.alembic_version"))

    def run_repair() -> int:
        with engine.connect() as conn:
            # waits on a row lock the test holds for as long as it likes: no lock_timeout cut short
            return repair.repair_failed_syncs(conn, declared, lock_timeout=timedelta(minutes=5)).done

    try:
        if order == "repair first":
            db.sql(PROFILE_WRITE_GATE, user="postgres")
            gate = psycopg2.connect(db.url("supabase_admin"))
            try:
                with gate.cursor() as cur:
                    cur.execute("SELECT pg_advisory_lock(4242)")
                repairing = Waiting(run_repair)
                wait_for_lock(admin(db), "repairing")  # repair read the account (locked FOR SHARE), now waits
                with AuthService(url_named(db.url(AUTH_ROLE), "changing")) as auth:
                    changing = Waiting(lambda: auth.admin_change_email(uid, "after@example.com"))
                    # the email change waits on a row lock: repair's FOR SHARE on the account, not the gate
                    wait_for_lock(admin(db), "changing", events=ROW_LOCK)
                    with gate.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(4242)")
                    assert repairing.result() == 1
                    changing.result()
            finally:
                gate.close()
        else:
            held = psycopg2.connect(db.url(AUTH_ROLE))
            try:
                with held.cursor() as cur:
                    cur.execute("UPDATE auth.users SET email = 'after@example.com', updated_at = now() WHERE id = %s",
                                (str(uid),))
                repairing = Waiting(run_repair)
                wait_for_lock(admin(db), "repairing")  # repair waits for the email change to commit
                held.commit()
                assert repairing.result() == 1
            finally:
                held.close()
    finally:
        engine.dispose()
    assert auth_row(db, uid)[0] == "after@example.com"
    assert profile_row(db, uid)[:2] == ("after@example.com", True)


def test_soft_deleted_ghosts_repaired_at_install_carry_deleted_at(db):
    with db.auth() as auth:
        kept = auth.signup(email="kept@example.com", confirmed=True)
        gone = auth.signup(email="gone@example.com", confirmed=True)
        auth.soft_delete(gone)
    db.upgrade()
    email, _, deleted_at = auth_row(db, gone)
    assert profile_row(db, gone) == (email, True, deleted_at)
    assert profile_row(db, gone)[2] is not None
    assert profile_row(db, kept)[2] is None
    assert db.value("SELECT count(*) FROM auth.users u JOIN public.users p ON p.id = u.id "
                    "WHERE p.deleted_at IS DISTINCT FROM u.deleted_at OR p.email IS DISTINCT FROM u.email") == 0


def test_a_resumed_backfill_leaves_no_ghost_behind_its_resume_point(db):
    db.upgrade()
    db.sql("SET session_replication_role = replica; INSERT INTO auth.users (instance_id, id, aud, role, email, "
           "created_at, updated_at) SELECT '00000000-0000-0000-0000-000000000000', gen_random_uuid(), "
           "'authenticated', 'authenticated', 'bulk' || g || '@example.com', now(), now() "
           "FROM generate_series(1, 3000) g")
    engine = create_engine(normalize(db.url()), isolation_level="AUTOCOMMIT")
    declared = chain.declared_at(db.value("SELECT version_num FROM public.alembic_version"))
    with engine.connect() as conn:
        cut = backfill.run_batched(conn, backfill.statements_for(declared), batch_size=500, mode="cli",
                                   max_batches=3)
    assert cut.status == "interrupted"
    last_id = db.value("SELECT details ->> 'last_id' FROM public.cleanup_audit_log WHERE id = %s", (cut.run_id,))
    # an import with the triggers off puts a ghost behind the point the next run resumes from
    behind = db.value(
        "SET session_replication_role = replica; INSERT INTO auth.users (instance_id, id, aud, role, email, "
        "created_at, updated_at) VALUES ('00000000-0000-0000-0000-000000000000', "
        "'00000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'behind@example.com', now(), "
        "now()) RETURNING id::text")
    assert behind < last_id
    with engine.connect() as conn:
        after = backfill.resume_point(conn, backfill.statements_for(declared))
        assert after == last_id
        done = backfill.run_batched(conn, backfill.statements_for(declared), batch_size=500, mode="cli",
                                    start_after=after)
    engine.dispose()
    assert done.status == "succeeded"
    assert ghost_count(db) == 0
    assert profile_row(db, behind) == ("behind@example.com", False, None)
    with db.engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.users")).scalar_one() == 3001
