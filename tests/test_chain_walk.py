"""Walk the whole chain down and up one revision at a time, checking objects, data and behaviour at each step."""

from __future__ import annotations

import psycopg2

from ghostsync import chain
from tests.catalog import trigger_definitions
from tests.seeding import revisions_base_to_head, seed_ghosts


def installed(db):
    """ghostsync's functions (signature -> text) and the triggers on auth.users (name -> definition)."""
    functions = dict(db.sql(
        "SELECT p.oid::regprocedure::text, p.prosrc FROM pg_proc p WHERE p.pronamespace = 'ghostsync'::regnamespace"
    ))
    return functions, trigger_definitions(db)


def expected(revision):
    found = chain.declared_at(revision)
    return ({sig: found.body(sig) for sig in found.functions},
            {name: trigger.definition for name, trigger in found.triggers.items()})


def data(db):
    return (
        db.sql("SELECT id::text FROM public.users ORDER BY 1"),
        db.sql("SELECT id, status FROM public.cleanup_audit_log ORDER BY 1"),
    )


def check_behaviour(db, revision, step):
    """A signup, a confirmation, and a signup whose profile write must fail."""
    functions, triggers = expected(revision)
    with db.auth() as auth:
        uid = auth.signup(email=f"walk{step}@example.com")
        has_profile = db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(uid),)) == 1
        assert has_profile == ("ghostsync_on_auth_user_created" in triggers), (revision, "signup sync")
        auth.confirm_email(uid)
        verified = db.value("SELECT email_verified FROM public.users WHERE id = %s", (str(uid),))
        if "ghostsync_on_auth_user_updated" in triggers:
            assert verified is True, (revision, "update sync")
        elif has_profile:
            assert verified is False, (revision, "no update sync yet")
        safe = "sync_failures" in functions.get("ghostsync.handle_new_user()", "")
        try:
            twin = auth.signup(email=f"walk{step}@example.com", sso=True)
            committed = True
            # its profile cannot be written while the UNIQUE rule stands; the backfill
            # of a later upgrade would fail on it, so the twin leaves again
            auth.hard_delete(twin)
            if db.value("SELECT to_regclass('ghostsync.sync_failures')"):
                db.sql("DELETE FROM ghostsync.sync_failures WHERE user_id = %s", (str(twin),))
        except psycopg2.errors.UniqueViolation:
            committed = False
        if "ghostsync_on_auth_user_created" not in triggers:
            assert committed, (revision, "nothing to fail without the trigger")
        else:
            assert committed == safe, (revision, "a failing profile write fails the signup only before 0006")


def test_walk_down_and_up_one_revision_at_a_time(db):
    revisions = revisions_base_to_head()
    seed_ghosts(db)
    db.upgrade()
    db.sql("ALTER TABLE public.users ADD CONSTRAINT users_email_key UNIQUE (email)", user="postgres")
    step = 0
    kept = data(db)
    path = [*reversed(revisions[:-1]), None]  # head-1 ... base
    for target in path:
        db.downgrade(target or "base")
        step += 1
        assert installed(db) == expected(target), f"objects after downgrade to {target}"
        profiles_now, audit_now = data(db)
        assert set(kept[0]) <= set(profiles_now), f"a profile was lost going down to {target}"
        assert audit_now[: len(kept[1])] == kept[1], f"an audit row was lost going down to {target}"
        check_behaviour(db, target, step)
        kept = data(db)
    for target in revisions:
        db.upgrade(target)
        step += 1
        assert installed(db) == expected(target), f"objects after upgrade to {target}"
        profiles_now, audit_now = data(db)
        assert set(kept[0]) <= set(profiles_now), f"a profile was lost going up to {target}"
        assert [r[0] for r in audit_now[: len(kept[1])]] == [r[0] for r in kept[1]]
        check_behaviour(db, target, step)
        kept = data(db)


def test_downgrade_restores_the_previous_function_text_exactly(db):
    db.upgrade("ghostsync_0005")
    before = installed(db)
    db.upgrade("head")
    db.downgrade("ghostsync_0005")
    assert installed(db) == before
    acl = db.value("SELECT proacl::text FROM pg_proc WHERE oid = 'ghostsync.handle_new_user()'::regprocedure")
    assert "anon" not in acl and "authenticated=" not in acl
