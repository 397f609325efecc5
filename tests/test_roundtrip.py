"""Rollback: downgrade base removes trigger and function, keeps every profile and audit row."""

from __future__ import annotations

from tests.seeding import audit_rows, duplicate_count, ghost_count, profiles, seed_app_with_profiles, seed_ghosts


def ghostsync_objects(db) -> tuple[int, int]:
    triggers = db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                        "AND tgname ~ '^(zz_)?ghostsync_'")
    functions = db.value("SELECT count(*) FROM pg_proc WHERE pronamespace = 'ghostsync'::regnamespace")
    return triggers, functions


def test_downgrade_base_removes_trigger_and_function_and_keeps_data(db):
    seed_app_with_profiles(db, 2)
    seed_ghosts(db)
    db.upgrade()
    kept_profiles, kept_audit = profiles(db), audit_rows(db)
    db.downgrade("base")
    assert ghostsync_objects(db) == (0, 0)
    assert db.value("SELECT count(*) FROM ghostsync.objects WHERE kind IN ('trigger', 'function')") == 0
    assert db.value("SELECT count(*) FROM public.alembic_version") == 0
    assert profiles(db) == kept_profiles
    assert audit_rows(db) == kept_audit


def test_down_and_up_twice_loses_nothing_and_repairs_ghosts_made_meanwhile(db):
    seed_ghosts(db, prefix="before")
    db.upgrade()
    for round_ in range(2):
        kept = profiles(db)
        audit_before = audit_rows(db)
        db.downgrade("base")
        with db.auth() as auth:
            meanwhile = auth.signup(email=f"meanwhile{round_}@example.com", confirmed=True)
        assert ghost_count(db) == 1, "while downgraded, nothing syncs: the signup is a ghost"
        db.upgrade()
        after = profiles(db)
        assert {k: after[k] for k in kept} == kept, "no profile lost or changed"
        assert after[str(meanwhile)][:2] == (f"meanwhile{round_}@example.com", True)
        assert ghost_count(db) == 0
        assert duplicate_count(db) == 0
        audit_after = audit_rows(db)
        assert audit_after[: len(audit_before)] == audit_before, "no audit row lost"
        assert [(r[0], r[1]) for r in audit_after[len(audit_before):]] == [("succeeded", 1)]
        registered = db.value("SELECT count(*) FROM ghostsync.objects WHERE kind IN ('trigger', 'function')")
        assert registered == 11  # 6 triggers, 5 functions (0010 added write_profile and two constraint triggers)
        assert ghostsync_objects(db) == (6, 5)
    with db.auth() as auth:
        uid = auth.signup(email="after@example.com")
    assert str(uid) in profiles(db)
