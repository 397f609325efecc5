"""No write the auth service makes to auth.users fails because of ghostsync; failed profile writes are recorded."""

from __future__ import annotations

import json

import pytest

from tests.seeding import failures, ghost_count, ghostsync_cli, profiles


@pytest.fixture
def head(db):
    db.upgrade()
    return db


def profile(db, uid):
    rows = db.sql("SELECT email, email_verified, deleted_at IS NOT NULL FROM public.users WHERE id = %s",
                  (str(uid),))
    return rows[0] if rows else None


def test_every_kind_of_auth_write_commits_and_syncs(head):
    db = head
    with db.auth() as auth:
        email = auth.signup(email="e@example.com")
        phone = auth.signup(phone="+15550000001")
        anon = auth.signup(anonymous=True)
        sso = auth.signup(email="s@example.com", sso=True, confirmed=True)
        auth.confirm_email(email)
        auth.sign_in(email)
        auth.change_email(email, "e2@example.com")
        auth.convert_anonymous(anon, "was-anon@example.com")
        auth.soft_delete(phone)
        auth.hard_delete(sso)
    assert profile(db, email) == ("e2@example.com", True, False)
    assert profile(db, anon) == ("was-anon@example.com", True, False)
    soft = profile(db, phone)
    # the auth service's soft delete: base64url(sha256(id || email)), 43 characters, no '@'
    assert len(soft[0]) == 43 and "@" not in soft[0] and soft[2] is True
    assert soft[0] == db.value("SELECT email FROM auth.users WHERE id = %s", (str(phone),))
    assert profile(db, sso) is None
    assert failures(db) == []
    assert ghost_count(db) == 0


def test_email_taken_by_another_profile_does_not_block_sso_signup(head):
    db = head
    db.sql("ALTER TABLE public.users ADD CONSTRAINT users_email_key UNIQUE (email)", user="postgres")
    with db.auth() as auth:
        auth.signup(email="shared@example.com")
        sso = auth.signup(email="shared@example.com", sso=True, confirmed=True)
    assert db.value("SELECT count(*) FROM auth.users WHERE email = 'shared@example.com'") == 2
    [(user_id, operation, sqlstate, message, count)] = failures(db)
    # the signup's INSERT and, in the same transaction, its confirmation (an UPDATE) both failed
    assert (user_id, operation, sqlstate, count) == (str(sso), "UPDATE", "23505", 2)
    assert "users_email_key" in message
    proc = ghostsync_cli(db, "status", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["failed_syncs"] == 1
    # the cause fixed, repair writes the profile and clears the record
    db.sql("ALTER TABLE public.users DROP CONSTRAINT users_email_key", user="postgres")
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 0, proc.stderr
    assert "1 failed sync(s) repaired, 0 still failing" in proc.stdout
    assert profile(db, sso) == ("shared@example.com", True, False)
    assert failures(db) == []
    assert ghostsync_cli(db, "status").returncode == 0


def test_any_error_in_the_profile_write_lets_every_write_commit(head):
    db = head
    db.sql("""
        CREATE FUNCTION public.app_rejects() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'app rule: profiles are frozen'; END $$;
        CREATE TRIGGER app_rejects BEFORE INSERT OR UPDATE OR DELETE ON public.users
          FOR EACH ROW EXECUTE FUNCTION public.app_rejects();
    """, user="postgres")
    with db.auth() as auth:
        uids = [auth.signup(email="x@example.com"), auth.signup(phone="+15550000002"), auth.signup(anonymous=True),
                auth.signup(email="y@example.com", sso=True)]
        auth.confirm_email(uids[0])
        auth.change_email(uids[0], "x2@example.com")
        auth.sign_in(uids[0])
        auth.soft_delete(uids[1])
        auth.hard_delete(uids[3])
    assert db.value("SELECT count(*) FROM auth.users") == 3
    recorded = {row[0]: row for row in failures(db)}
    assert set(recorded) == {str(u) for u in uids}
    assert recorded[str(uids[0])][1:3] == ("UPDATE", "P0001")
    assert recorded[str(uids[0])][4] == 3, "signup, confirmation and email change failed; sign-in wrote nothing"
    # an SSO signup is confirmed in its own transaction (an UPDATE, which failed too); its profile never
    # existed, so the delete had nothing to fail on
    assert recorded[str(uids[3])][1] == "UPDATE"
    assert "app rule: profiles are frozen" in recorded[str(uids[2])][3]
    proc = ghostsync_cli(db, "repair")
    # the deleted SSO user's record clears (nothing left to write); the other three still fail
    assert proc.returncode == 1 and "1 failed sync(s) repaired, 3 still failing" in proc.stdout
    assert ("still failing (backfill_ghost_users): 3 ghost(s) could not be repaired "
            "(recorded in ghostsync.sync_failures)") in proc.stderr
    db.sql("DROP TRIGGER app_rejects ON public.users", user="postgres")
    proc = ghostsync_cli(db, "repair")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert failures(db) == []
    assert profile(db, uids[0]) == ("x2@example.com", True, False)
    assert profile(db, uids[1])[2] is True
    assert profile(db, uids[3]) is None
    assert ghost_count(db) == 0


def test_signup_commits_even_when_nothing_can_be_recorded(head):
    db = head
    db.sql("ALTER TABLE public.users RENAME TO users_moved; ALTER TABLE ghostsync.sync_failures RENAME TO gone")
    with db.auth() as auth:
        uid = auth.signup(email="lonely@example.com")
    assert db.value("SELECT count(*) FROM auth.users WHERE id = %s", (str(uid),)) == 1


ODD_EMAILS = [
    "a" * 64 + "@" + "b" * 178 + ".example.com",  # 255 characters, the column's limit
    "üñíçødé@exämple.com",
    "o'brien+tag@example.com",
    "\"quoted local\"@example.com",
    "back\\slash@example.com",
]
# The auth service keeps user metadata as a JSON object (its UserMetaData is a map).
ODD_METADATA = [None, {}, {"nested": {"deep": [{"x": None}]}}, {"list": [1, 2, 3], "n": 42},
                {"name": "x" * 100_000}, {"quote": "'; DROP TABLE public.users; --"}, {"emoji": "👻"}]


@pytest.mark.parametrize("email", ODD_EMAILS)
def test_odd_but_valid_emails(head, email):
    with head.auth() as auth:
        uid = auth.signup(email=email, confirmed=True)
    assert profile(head, uid) == (email, True, False)


@pytest.mark.parametrize("meta", ODD_METADATA, ids=[f"meta{i}" for i in range(len(ODD_METADATA))])
def test_metadata_of_any_shape(head, meta):
    with head.auth() as auth:
        uid = auth.signup(email="meta@example.com", user_meta=meta)
    assert profile(head, uid) == ("meta@example.com", False, False)
    assert failures(head) == []


def test_many_signups_keep_profiles_one_to_one(head):
    with head.auth() as auth:
        for i in range(200):
            kind = i % 4
            if kind == 0:
                auth.signup(email=f"bulk{i}@example.com")
            elif kind == 1:
                auth.signup(phone=f"+1555{i:07d}")
            elif kind == 2:
                auth.signup(anonymous=True)
            else:
                auth.signup(email=f"bulk{i}@example.com", sso=True, confirmed=True)
    assert len(profiles(head)) == 200
    assert ghost_count(head) == 0
