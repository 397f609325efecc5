"""Profiles follow auth.users: updates, soft and hard deletes; orphans and stale profiles are detected."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from ghostsync import status
from ghostsync.urls import normalize
from tests.seeding import failures, ghostsync_cli


def row(db, uid):
    rows = db.sql("SELECT email, email_verified, deleted_at IS NOT NULL, xmin::text, ctid::text, updated_at "
                  "FROM public.users WHERE id = %s", (str(uid),))
    return rows[0] if rows else None


def collect(db, **kwargs):
    engine = create_engine(normalize(db.url()))
    try:
        with engine.connect() as conn:
            return status.collect(conn, **kwargs)
    finally:
        engine.dispose()


@pytest.fixture
def head(db):
    db.upgrade()
    return db


def test_confirmation_sets_email_verified(head):
    with head.auth() as auth:
        uid = auth.signup(email="c@example.com")
        assert row(head, uid)[:2] == ("c@example.com", False)
        auth.confirm_email(uid)
    assert row(head, uid)[:2] == ("c@example.com", True)


def test_email_change_follows(head):
    with head.auth() as auth:
        uid = auth.signup(email="old@example.com", confirmed=True)
        auth.change_email(uid, "new@example.com")
    assert row(head, uid)[:2] == ("new@example.com", True)


def test_anonymous_to_permanent(head):
    with head.auth() as auth:
        uid = auth.signup(anonymous=True)
        assert row(head, uid)[:2] == (None, False)
        auth.convert_anonymous(uid, "kept@example.com")
    assert row(head, uid)[:2] == ("kept@example.com", True)


def test_soft_delete_is_reflected(head):
    with head.auth() as auth:
        uid = auth.signup(email="leaving@example.com", confirmed=True)
        auth.soft_delete(uid)
    email, _, deleted, *_ = row(head, uid)
    assert deleted is True
    assert email == head.value("SELECT email FROM auth.users WHERE id = %s", (str(uid),))
    assert email != "leaving@example.com"


def test_sign_in_and_token_refresh_write_nothing(head):
    with head.auth() as auth:
        uid = auth.signup(email="quiet@example.com", confirmed=True)
        before = row(head, uid)
        for _ in range(3):
            auth.sign_in(uid)
        auth._transaction((
            "UPDATE users SET confirmation_token = 'refresh', recovery_sent_at = now(), updated_at = now(),"
            " raw_app_meta_data = raw_app_meta_data || '{\"x\":1}' WHERE id = %(id)s",
            {"id": str(uid)},
        ))
        # an UPDATE that sets a synced column to the value it already has is no change either
        auth._transaction(("UPDATE users SET email = email WHERE id = %(id)s", {"id": str(uid)}))
    assert row(head, uid) == before, "same xmin and ctid: the profile row was not written"


def test_hard_delete_removes_the_profile(head):
    with head.auth() as auth:
        uid = auth.signup(email="gone@example.com")
        auth.hard_delete(uid)
    assert row(head, uid) is None
    assert failures(head) == []


# An adopted table's key decides what a hard delete does to its profile: tests/test_deletes.py.


def test_orphans_and_stale_profiles_are_detected_and_repaired(db):
    db.upgrade()  # public.users is ghostsync's: a profile without an account is an orphan to repair
    with db.auth() as auth:
        keep = auth.signup(email="keep@example.com")
        doomed = auth.signup(email="doomed@example.com")
    db.downgrade("ghostsync_0006")  # no update/delete sync while downgraded
    with db.auth() as auth:
        auth.confirm_email(keep)
        auth.change_email(keep, "keep2@example.com")
    # an account deleted past every trigger and key (replication, a restore)
    db.sql("SET session_replication_role = replica; DELETE FROM auth.users WHERE id = %s", (str(doomed),))
    db.upgrade("ghostsync_0008")  # the syncs are back; the resync job of 0009 has not run
    found = collect(db)
    assert (found.ghosts, found.orphans, found.stale_profiles) == (0, 1, 1)
    assert not found.healthy
    assert {p.code for p in found.problems} == {"orphans", "stale_profiles"}
    assert "behind_head" in {w.code for w in found.warnings}
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 stale profile(s) rewritten; 1 orphan(s) deleted" in proc.stdout
    assert row(db, keep)[:2] == ("keep2@example.com", True)
    assert row(db, doomed) is None
    [(details,)] = db.sql("SELECT details FROM public.cleanup_audit_log WHERE job_name = 'repair_orphans'")
    assert details["ids"] == [str(doomed)]
    after = collect(db)
    assert (after.orphans, after.stale_profiles) == (0, 0)
    assert after.healthy and after.revision == "ghostsync_0008"
