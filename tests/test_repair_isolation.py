"""``ghostsync repair`` never lets one row hold back the others, never waits unbounded on a row lock,
writes no audit row when it has nothing to do, and says what it would do (``--dry-run``)."""

from __future__ import annotations

import psycopg2
import pytest

from tests.seeding import ghostsync_cli, seed_bulk_ghosts

BLOCKED = "no_blocked_domain"


def stale(db, user_id, email):
    """Change an account's email with the triggers off: its profile is now stale."""
    db.sql("SET session_replication_role = replica; UPDATE auth.users SET email = %s WHERE id = %s",
           (email, user_id))


def user_ids(db):
    return [r[0] for r in db.sql("SELECT id::text FROM auth.users ORDER BY id")]


def audit_count(db):
    return db.value("SELECT count(*) FROM public.cleanup_audit_log")


@pytest.fixture
def installed(db):
    seed_bulk_ghosts(db, 40)
    db.upgrade()
    return db


def test_a_stale_profile_the_apps_check_refuses_is_named_and_the_others_are_rewritten(installed):
    db = installed
    db.sql(f"ALTER TABLE public.users ADD CONSTRAINT {BLOCKED} "
           "CHECK (email IS NULL OR email NOT LIKE '%%@blocked.example') NOT VALID", user="postgres")
    ids = user_ids(db)
    refused = ids[17]
    for n, uid in enumerate(ids[:30]):
        stale(db, uid, "refused@blocked.example" if uid == refused else f"moved{n}@example.com")
    proc = ghostsync_cli(db, "repair", "--batch-size", "25")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "29 stale profile(s) rewritten" in proc.stdout, proc.stdout
    named = [line for line in proc.stderr.splitlines() if refused in line]
    assert len(named) == 1 and "repair_stale_profiles" in named[0] and "23514" in named[0] and BLOCKED in named[0]
    assert db.value("SELECT count(*) FROM public.users WHERE email LIKE 'moved%%'") == 29
    [(status, affected, details)] = db.sql("SELECT status, records_affected, details FROM public.cleanup_audit_log "
                                           "WHERE job_name = 'repair_stale_profiles'")
    assert (status, affected, details["still_failing"]) == ("partial", 29, 1)
    assert refused in details["errors"][0]


def test_an_orphan_the_app_still_references_is_named_and_the_others_are_deleted(installed):
    db = installed
    ids = user_ids(db)
    db.sql("CREATE TABLE public.posts (author uuid REFERENCES public.users (id))", user="postgres")
    db.sql("INSERT INTO public.posts VALUES (%s)", (ids[3],))
    db.sql("SET session_replication_role = replica; DELETE FROM auth.users WHERE id = ANY (%s::uuid[])",
           (ids[:6],))
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "5 orphan(s) deleted" in proc.stdout
    named = [line for line in proc.stderr.splitlines() if ids[3] in line]
    assert len(named) == 1 and "repair_orphans" in named[0] and "23503" in named[0], proc.stderr
    assert db.value("SELECT count(*) FROM public.users WHERE id = ANY (%s::uuid[])", (ids[:6],)) == 1


def test_a_repair_with_nothing_to_do_writes_no_audit_row(installed):
    db = installed
    before = audit_count(db)
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 0, proc.stderr
    assert ("0 failed sync(s) repaired, 0 still failing; 0 stale profile(s) rewritten; 0 orphan(s) deleted; "
            "0 ghost(s) backfilled") in proc.stdout
    assert audit_count(db) == before


def test_a_dry_run_counts_each_step_and_writes_nothing(installed):
    db = installed
    ids = user_ids(db)
    stale(db, ids[0], "moved@example.com")
    db.sql("SET session_replication_role = replica; DELETE FROM auth.users WHERE id = %s", (ids[1],))
    db.sql("SET session_replication_role = replica; DELETE FROM public.users WHERE id = ANY (%s::uuid[])",
           (ids[2:4],))
    db.sql("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) "
           "VALUES (%s, 'UPDATE', '23514', 'boom')", (ids[5],))
    before = audit_count(db)
    proc = ghostsync_cli(db, "repair", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert ("dry run: would retry 1 failed sync(s), rewrite 1 stale profile(s), delete 1 orphan(s), backfill 2 "
            "ghost(s); nothing written") in proc.stdout, proc.stdout
    assert audit_count(db) == before
    assert db.value("SELECT email FROM public.users WHERE id = %s", (ids[0],)) != "moved@example.com"


def test_a_row_another_transaction_holds_is_waited_for_only_lock_timeout(installed):
    """Another transaction holds one account FOR UPDATE (as the auth service does mid-request) for as long as the
    test likes: repair waits for it at most GHOSTSYNC_LOCK_TIMEOUT per try, names it busy, repairs the rest, and
    the next run (the holder gone) takes it."""
    db = installed
    ids = user_ids(db)
    held, others = ids[10], ids[:10]
    for n, uid in enumerate([held, *others]):
        stale(db, uid, f"moved{n}@example.com")
    db.sql("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) "
           "VALUES (%s, 'UPDATE', '40001', 'boom')", (held,))
    holder = psycopg2.connect(db.url("supabase_admin"))
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM auth.users WHERE id = %s FOR UPDATE", (held,))
        proc = ghostsync_cli(db, "repair", timeout=120, env_extra={"GHOSTSYNC_LOCK_TIMEOUT": "200ms"})
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "10 stale profile(s) rewritten" in proc.stdout, proc.stdout
    busy = [line for line in proc.stderr.splitlines() if held in line]
    assert len(busy) == 2 and all("55P03 busy" in line and "200ms" in line for line in busy), proc.stderr
    again = ghostsync_cli(db, "repair", timeout=120)
    assert again.returncode == 0, again.stderr
    assert db.value("SELECT email FROM public.users WHERE id = %s", (held,)) == "moved0@example.com"



BUSY_FAST = {"GHOSTSYNC_LOCK_TIMEOUT": "100ms", "GHOSTSYNC_LOCK_RETRIES": "1", "GHOSTSYNC_LOCK_BACKOFF": "100ms"}


X_BUSY_FAST = ("-x", "lock_timeout=100ms", "-x", "lock_retries=1", "-x", "lock_backoff=100ms")


@pytest.mark.parametrize("given", ["environment", "x"])
def test_the_resync_waits_for_a_held_row_only_its_lock_budget(db, given):
    """ghostsync_0009's resync batches waited for a held account as long as its holder lived (the session's
    lock_timeout: none). Each try now waits at most lock_timeout; when the row stays busy through the retries
    the upgrade stops with 55P03 (the job resumes) instead of hanging, and the next run, the holder gone,
    finishes it."""
    seed_bulk_ghosts(db, 30)
    db.upgrade("ghostsync_0008")
    target = user_ids(db)[12]
    stale(db, target, "moved@example.com")
    holder = psycopg2.connect(db.url("supabase_admin"))  # an auth request mid-flight, for as long as it likes
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM auth.users WHERE id = %s FOR UPDATE", (target,))
        # the budget as the deploy gives it: GHOSTSYNC_LOCK_* or Alembic's -x (which reaches the job too)
        if given == "x":  # -x wins over the environment's budget, which would outlast the test's timeout
            proc = ghostsync_cli(db, "migrate", *X_BUSY_FAST, "upgrade", "head", timeout=60,
                                 env_extra={"GHOSTSYNC_LOCK_RETRIES": "1000"})
        else:
            proc = ghostsync_cli(db, "migrate", "upgrade", "head", timeout=60, env_extra=BUSY_FAST)
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "55P03" in proc.stderr and "lock timeout" in proc.stderr, proc.stderr
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0008"
    again = ghostsync_cli(db, "migrate", "upgrade", "head", timeout=120)
    assert again.returncode == 0, again.stderr
    assert db.value("SELECT email FROM public.users WHERE id = %s", (target,)) == "moved@example.com"


@pytest.mark.parametrize("command", [("backfill",), ("repair",)])
def test_the_ghost_walk_waits_for_a_held_account_only_its_lock_budget(db, command):
    """``ghostsync backfill`` and repair's ghost step write profiles whose key check locks the account (FOR KEY
    SHARE): one account held FOR UPDATE by an auth request kept the walk waiting as long as the request lived.
    Each try now waits at most lock_timeout; while the row stays busy through the retries the run stops with
    55P03 (resumable, audited as failed) instead of hanging, and the next run, the holder gone, finishes."""
    db.upgrade()
    seed_bulk_ghosts(db, 30)
    target = user_ids(db)[12]
    holder = psycopg2.connect(db.url("supabase_admin"))
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM auth.users WHERE id = %s FOR UPDATE", (target,))
        proc = ghostsync_cli(db, *command, timeout=60, env_extra=BUSY_FAST)
        assert db.value("SELECT count(*) FROM auth.users AS u WHERE NOT EXISTS "
                        "(SELECT 1 FROM public.users AS p WHERE p.id = u.id)") > 0
    finally:
        holder.rollback()
        holder.close()
    # backfill: the run failed (exit 2); repair: its ghost step is not done (exit 1); either names the wait
    assert proc.returncode == (2 if command == ("backfill",) else 1), (proc.stdout, proc.stderr)
    [said] = [line for line in proc.stderr.splitlines() if "55P03" in line]
    assert "held by another transaction" in said and "run it again" in said, said
    again = ghostsync_cli(db, *command, timeout=120)
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert db.value("SELECT count(*) FROM auth.users AS u WHERE NOT EXISTS "
                    "(SELECT 1 FROM public.users AS p WHERE p.id = u.id)") == 0
