"""The command line's backfill walks auth.users in physical order and still leaves no ghost behind.

A walk by heap position can miss an account whose row moves behind it while
it runs (an UPDATE that cannot stay on its page writes the new version on a
page with room, wherever that is), one that a transaction still open when the
walk passed commits later, and, after a rewrite of the table (VACUUM FULL),
any row at all. Each case is forced between two batches (``on_batch`` runs
between them, the run's connection idle), and checked to have happened where
the test needs it (behind the walk's position), so nothing is left to timing.
Control runs without the sweep show that the walk alone does leave these
ghosts behind.
"""

from __future__ import annotations

import dataclasses
import uuid

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from ghostsync import backfill, chain
from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.urls import normalize
from tests.interleave import ROW_LOCK, Waiting, url_named, wait_for_lock
from tests.seeding import ghost_count

BATCH = 300

BULK_GHOSTS = (
    "SET session_replication_role = replica; "
    "INSERT INTO auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, "
    "created_at, updated_at, is_sso_user, is_anonymous) "
    "SELECT '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', "
    "'walk' || g || '@example.com', '{}', jsonb_build_object('n', g), now(), now(), false, false "
    "FROM generate_series(1, %s) AS g"
)
# Holds any writer of a profile in the middle of its statement while the test holds advisory lock 4243.
PROFILE_WRITE_GATE = """
CREATE FUNCTION public.app_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(4243); RETURN NEW; END $$;
CREATE TRIGGER app_gate BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.app_gate();
"""


def page_of(db, uid) -> int:
    return int(db.value("SELECT (ctid::text::point)[0]::int FROM auth.users WHERE id = %s", (str(uid),)))


def walked_to(db, run_id: int) -> int:
    """The last heap page the run's walk has done ("page N" in its audit row)."""
    position = db.value("SELECT details ->> 'last_id' FROM public.cleanup_audit_log WHERE id = %s", (run_id,))
    assert position and position.startswith("page "), position
    return int(position.split()[1])


def orphan_count(db) -> int:
    return int(db.value("SELECT count(*) FROM public.users p WHERE NOT EXISTS "
                        "(SELECT 1 FROM auth.users u WHERE u.id = p.id)"))


def stale_count(db) -> int:
    return int(db.value(
        "SELECT count(*) FROM auth.users u JOIN public.users p ON p.id = u.id "
        "WHERE p.email IS DISTINCT FROM u.email OR p.email_verified <> (u.email_confirmed_at IS NOT NULL) "
        "OR p.deleted_at IS DISTINCT FROM u.deleted_at"))


@pytest.fixture
def ghosts(db):
    """Head, 3000 ghosts, and room on heap page 0 (10 rows deleted there, then VACUUM), so that
    a row version that leaves its full page lands on page 0: behind any walk past it."""
    db.upgrade()
    db.sql(BULK_GHOSTS, (3000,))
    db.sql("SET session_replication_role = replica; DELETE FROM auth.users WHERE ctid = ANY "
           "(ARRAY(SELECT ctid FROM auth.users WHERE (ctid::text::point)[0] = 0 LIMIT 10))")
    db.sql("VACUUM (ANALYZE) auth.users")
    return db


def run(db, statements, on_batch=None, **kw) -> backfill.BackfillResult:
    engine = create_engine(normalize(db.url()), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return backfill.run_batched(conn, statements, batch_size=BATCH, mode="cli", on_batch=on_batch, **kw)
    finally:
        engine.dispose()


def head_statements(db) -> backfill.BackfillStatements:
    return backfill.statements_for(chain.declared_at(db.value("SELECT version_num FROM public.alembic_version")))


def first_batch_only(action):
    """An on_batch callback that runs ``action(result)`` once, after the first batch."""
    done = []

    def callback(result: backfill.BackfillResult) -> None:
        if not done:
            done.append(True)
            action(result)
    return callback


def last_ghost(db) -> str:
    """A ghost on the last full page of the table: ahead of the walk until its very end."""
    return str(db.value("SELECT id FROM auth.users WHERE (ctid::text::point)[0] = "
                        "(SELECT max((ctid::text::point)[0]) - 1 FROM auth.users) LIMIT 1"))


def move_behind(db, uid: str, result: backfill.BackfillResult) -> None:
    """An update of no synced column (no ghostsync trigger fires) that makes the row too big for
    its page: the new version goes to the first page with room, page 0, behind the walk."""
    before = page_of(db, uid)
    position = walked_to(db, result.run_id)
    assert before > position, "the account starts ahead of the walk"
    db.sql("UPDATE auth.users SET raw_user_meta_data = jsonb_build_object('bio', %s) WHERE id = %s",
           (uuid.uuid4().hex * 30, uid), user=AUTH_ROLE)
    assert page_of(db, uid) <= position, "the update moved the row behind the walk"


@pytest.mark.parametrize("sweep", [True, False], ids=["sweep", "control-without-sweep"])
def test_a_ghost_moved_behind_the_walk_is_repaired(ghosts, sweep):
    db = ghosts
    uid = last_ghost(db)
    statements = head_statements(db)
    if not sweep:
        statements = dataclasses.replace(statements, sweep=None)
    done = run(db, statements, first_batch_only(lambda r: move_behind(db, uid, r)))
    assert done.status == "succeeded"
    left = int(db.value("SELECT count(*) FROM public.users WHERE id = %s", (uid,)))
    if sweep:
        assert ghost_count(db) == 0 and left == 1
        assert done.repaired == 2990
    else:  # the walk alone passes the row by: that is what the sweep is for
        assert ghost_count(db) == 1 and left == 0


def test_a_ghost_committed_after_the_walk_passed_its_page_is_repaired(ghosts):
    db = ghosts
    # A transaction open before the run writes a ghost on page 0 (trigger off, as a restore does)
    # and commits only once the walk is past page 0: the walk never saw it.
    held = psycopg2.connect(db.url("supabase_admin"))
    try:
        with held.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
            cur.execute("INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at) VALUES "
                        "('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', "
                        "'authenticated', 'late@example.com', now(), now()) RETURNING id, (ctid::text::point)[0]")
            late, page = cur.fetchone()
        assert page == 0

        def commit(result: backfill.BackfillResult) -> None:
            assert walked_to(db, result.run_id) >= 0
            held.commit()

        done = run(db, head_statements(db), first_batch_only(commit))
    finally:
        held.close()
    assert done.status == "succeeded"
    assert ghost_count(db) == 0
    assert db.value("SELECT email FROM public.users WHERE id = %s", (str(late),)) == "late@example.com"


@pytest.mark.parametrize("sweep", [True, False], ids=["sweep", "control-without-sweep"])
def test_a_table_rewritten_during_the_walk_gets_the_full_sweep(ghosts, sweep):
    db = ghosts
    statements = head_statements(db)
    if not sweep:
        statements = dataclasses.replace(statements, sweep=None)

    def rewrite(result: backfill.BackfillResult) -> None:
        # deletes ahead of the walk, then VACUUM FULL packs the rest towards page 0: rows the walk
        # has not seen now sit on pages it has passed (their xmin unchanged, so only the id sweep finds them)
        position = walked_to(db, result.run_id)
        db.sql("DELETE FROM auth.users WHERE id IN (SELECT id FROM auth.users WHERE (ctid::text::point)[0] "
               "BETWEEN %s AND %s)", (position + 1, position + 10), user=AUTH_ROLE)
        db.sql("VACUUM FULL auth.users")

    done = run(db, statements, first_batch_only(rewrite))
    assert done.status == "succeeded"
    assert orphan_count(db) == 0
    if sweep:
        assert ghost_count(db) == 0
    else:
        assert ghost_count(db) > 0


def test_signups_updates_and_deletes_between_every_batch_leave_no_ghost_and_no_orphan(ghosts):
    db = ghosts
    ids = [str(r[0]) for r in db.sql("SELECT id FROM auth.users ORDER BY ctid")]
    assert len(ids) == 2990
    events = {"signups": 0, "deleted": 0, "moved": 0}
    with AuthService(db.url(AUTH_ROLE)) as auth:
        def churn(result: backfill.BackfillResult) -> None:
            n = result.batches
            position = walked_to(db, result.run_id)
            # a move behind the walk, while page 0 has room (first, before the signups fill it)
            mover = ids[-(n + 120)]
            if page_of(db, mover) > position:
                db.sql("UPDATE auth.users SET raw_user_meta_data = jsonb_build_object('bio', %s) WHERE id = %s",
                       (uuid.uuid4().hex * 30, mover), user=AUTH_ROLE)
                events["moved"] += page_of(db, mover) <= position
            auth.signup_email(f"during{n}@example.com", autoconfirm=n % 2 == 0, session=False)
            events["signups"] += 1
            # a hard delete ahead of the walk and one behind it
            for uid in (ids[-n], ids[n]):
                auth.hard_delete(uuid.UUID(uid))
                events["deleted"] += 1
            # a sign-in (no synced column) and a confirmation (the update sync) of accounts ahead
            ahead = ids[-(n + 40)]
            auth.sign_in(uuid.UUID(ahead))
            auth.confirm_email(uuid.UUID(ids[-(n + 80)]))

        done = run(db, head_statements(db), churn)
    assert done.status == "succeeded"
    assert events["moved"] >= 1, events
    assert ghost_count(db) == 0
    assert orphan_count(db) == 0
    assert stale_count(db) == 0
    assert db.value("SELECT count(*) FROM public.users") == db.value("SELECT count(*) FROM auth.users")


def test_members_among_the_ghosts_turn_probing_on_and_nothing_is_written_twice(ghosts):
    db = ghosts
    # every seventh account already has a profile (the app wrote it): unchecked ranges meet it
    db.sql("INSERT INTO public.users (id, email, email_verified) SELECT id, email, false FROM "
           "(SELECT id, email, row_number() OVER (ORDER BY ctid) AS n FROM auth.users) AS a WHERE n % 7 = 0")
    members = int(db.value("SELECT count(*) FROM public.users"))
    done = run(db, head_statements(db))
    assert done.status == "succeeded"
    assert done.repaired == 2990 - members
    assert ghost_count(db) == 0 and orphan_count(db) == 0
    assert db.value("SELECT count(*) FROM ghostsync.sync_failures") == 0


def test_without_a_foreign_key_the_walk_locks_the_ghosts_it_repairs(db):
    """ghostsync's profile table, without a foreign key since ghostsync_0011: nothing but the walk's own
    lock keeps a hard delete from landing between the read and the commit (the profile would outlive the
    account)."""
    db.upgrade()
    db.sql(BULK_GHOSTS, (500,))
    db.sql("VACUUM (ANALYZE) auth.users")
    db.sql(PROFILE_WRITE_GATE, user="postgres")
    first = str(db.value("SELECT id FROM auth.users ORDER BY ctid LIMIT 1"))
    gate = psycopg2.connect(db.url("supabase_admin"))
    gate.autocommit = True
    held = [True]

    def release() -> None:
        if held[0]:
            held[0] = False
            with gate.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(4243)")

    statements = head_statements(db)
    engine = create_engine(normalize(url_named(db.url(), "walking")), isolation_level="AUTOCOMMIT")
    try:
        with gate.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(4243)")
        with engine.connect() as conn:
            walking = Waiting(lambda: backfill.run_batched(conn, statements, batch_size=BATCH, mode="cli"))
            try:
                wait_for_lock(db.url("supabase_admin"), "walking", events=("advisory",))
                with AuthService(url_named(db.url(AUTH_ROLE), "deleting")) as auth:
                    deleting = Waiting(lambda: auth.hard_delete(uuid.UUID(first)))
                    try:
                        # the ghost the held batch is writing is locked: the delete waits for the batch
                        wait_for_lock(db.url("supabase_admin"), "deleting", events=ROW_LOCK)
                    finally:
                        release()
                        deleting.result()
            finally:
                release()
                done = walking.result()
    finally:
        engine.dispose()
        gate.close()
    assert done.status == "succeeded"
    assert orphan_count(db) == 0 and ghost_count(db) == 0


def test_the_walk_reads_each_batch_in_one_range_of_pages(ghosts):
    """Each batch reads its pages with a TID range scan (never the whole table), whatever the
    statistics say, and a range covers about batch_size accounts."""
    db = ghosts
    statements = head_statements(db)
    engine = create_engine(normalize(db.url()), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            run_id = conn.execute(statements.start, {"job": "backfill_ghost_users", "run_mode": "test"}).scalar_one()
            for name, statement in (("checked", statements.batch), ("unchecked", statements.physical.unchecked)):
                plan = "\n".join(r[0] for r in conn.execute(
                    text("EXPLAIN (COSTS OFF) " + str(statement)),
                    {"run_id": run_id, "after": "page 3", "batch_size": BATCH}))
                assert "Tid Range Scan on users u" in plan, (name, plan)
                assert "Seq Scan on users u" not in plan, (name, plan)
            rows = conn.execute(text(str(statements.physical.unchecked)),
                                {"run_id": run_id, "after": "page 20", "batch_size": BATCH}).one()
            assert BATCH * 0.7 <= rows.scanned <= BATCH * 1.3, rows
    finally:
        engine.dispose()
