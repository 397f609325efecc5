"""Every path of the auth service, written as supabase/auth writes it, leaves profiles equal to auth.users.

After each path: no ghost, no orphan, no profile whose synced columns (as the
revision the database is at declares them) disagree with its account, no
recorded failure, and the auth write committed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ghostsync import chain, health, sync
from tests.seeding import failures


@pytest.fixture
def head(db):
    db.upgrade()
    return db


def assert_in_step(db) -> None:
    declared = chain.declared_at(db.value("SELECT version_num FROM public.alembic_version"))
    with db.engine().connect() as conn:
        counts = health.full_counts(conn, declared)
        stale = conn.execute(text(
            "SELECT u.id::text FROM auth.users AS u JOIN public.users AS p ON p.id = u.id "
            f"WHERE {sync.stale_condition(declared)}")).scalars().all()
    assert (counts.ghosts, counts.orphans, stale) == (0, 0, [])
    assert failures(db) == []


def profile(db, uid) -> tuple | None:
    rows = db.sql("SELECT email, email_verified, deleted_at IS NOT NULL FROM public.users WHERE id = %s",
                  (str(uid),))
    return rows[0] if rows else None


SIGNUPS = {
    "email, unconfirmed": lambda a: a.signup_email("u@example.com"),
    "email, autoconfirm": lambda a: a.signup_email("c@example.com", autoconfirm=True),
    "phone": lambda a: a.signup_phone("+15550001000"),
    "phone, autoconfirm": lambda a: a.signup_phone("+15550001001", autoconfirm=True),
    "anonymous": lambda a: a.signup_anonymous(),
    "oauth, verified": lambda a: a.signup_external("github", "gh@example.com"),
    "oauth, unverified": lambda a: a.signup_external("github", "unv@example.com", email_verified=False),
    "sso": lambda a: a.signup_sso("sso@example.com"),
    "admin create": lambda a: a.admin_create_user(email="admin@example.com"),
    "admin create, confirmed": lambda a: a.admin_create_user(email="adminc@example.com", email_confirm=True),
}


@pytest.mark.parametrize("kind", list(SIGNUPS))
def test_every_kind_of_signup(head, kind):
    with head.auth() as auth:
        try:
            uid = SIGNUPS[kind](auth)
        except Exception as exc:  # a handler that commits with an error (NewCommitWithError) still committed
            if not getattr(exc, "committed", False):
                raise
            uid = head.value("SELECT id FROM auth.users ORDER BY created_at DESC LIMIT 1")
    assert profile(head, uid) is not None
    assert_in_step(head)


def test_confirmation_email_change_and_admin_change(head):
    with head.auth() as auth:
        uid = auth.signup_email("first@example.com")
        assert profile(head, uid) == ("first@example.com", False, False)
        auth.confirm_email(uid)
        assert profile(head, uid) == ("first@example.com", True, False)
        auth.request_email_change(uid, "second@example.com")
        assert profile(head, uid)[0] == "first@example.com", "the new address waits in email_change"
        auth.verify_email_change(uid, which="current")
        auth.verify_email_change(uid, which="new")
        assert profile(head, uid) == ("second@example.com", True, False)
        auth.admin_change_email(uid, "third@example.com")  # keeps email_confirmed_at
        assert profile(head, uid) == ("third@example.com", True, False)
    assert_in_step(head)


@pytest.mark.parametrize("how", ["email", "email, autoconfirm", "phone", "admin", "oauth link"])
def test_anonymous_to_permanent(head, how):
    with head.auth() as auth:
        uid = auth.signup_anonymous()
        if how == "email":
            auth.request_email_change(uid, "perm@example.com")
            assert profile(head, uid)[0] is None, "unverified: the address waits in email_change"
            auth.verify_email_change(uid)
        elif how == "email, autoconfirm":
            auth.convert_anonymous(uid, "perm@example.com", autoconfirm=True)
        elif how == "phone":
            auth.convert_anonymous_phone(uid, "+15550002000", autoconfirm=True)
        elif how == "admin":
            auth.admin_convert_anonymous(uid, "perm@example.com")
        else:
            auth.link_identity(uid, "github", email="perm@example.com")
    assert_in_step(head)


def test_identity_unlink_can_make_a_user_unconfirmed_again(head):
    with head.auth() as auth:
        uid = auth.signup_external("github", "linked@example.com")
        auth.link_identity(uid, "google", email="other@example.com", email_verified=False)
        auth.unlink_identity(uid, "github")
    email, confirmed = head.sql("SELECT email, email_confirmed_at IS NOT NULL FROM auth.users WHERE id = %s",
                                (str(uid),))[0]
    assert profile(head, uid)[:2] == (email, confirmed)
    assert_in_step(head)


def test_sign_in_refresh_and_logout_leave_the_profile_alone(head):
    with head.auth() as auth:
        uid = auth.signup_email("quiet@example.com", autoconfirm=True)
        before = head.sql("SELECT xmin::text, updated_at FROM public.users WHERE id = %s", (str(uid),))
        session = auth.sign_in(uid)
        session = auth.refresh(session)
        auth.refresh(session)
        auth.logout(session)
    assert head.sql("SELECT xmin::text, updated_at FROM public.users WHERE id = %s", (str(uid),)) == before
    assert_in_step(head)


@pytest.mark.parametrize("kind", ["email", "phone", "anonymous"])
def test_soft_delete(head, kind):
    with head.auth() as auth:
        uid = {"email": lambda: auth.signup_email("sd@example.com", autoconfirm=True),
               "phone": lambda: auth.signup_phone("+15550003000", autoconfirm=True),
               "anonymous": auth.signup_anonymous}[kind]()
        auth.soft_delete(uid)
    email = head.value("SELECT email FROM auth.users WHERE id = %s", (str(uid),))
    assert len(email) == 43 and "@" not in email
    assert profile(head, uid)[0] == email and profile(head, uid)[2] is True
    assert_in_step(head)


def test_hard_delete_and_the_anonymous_cleanup_of_100_in_one_statement(head):
    with head.auth() as auth:
        kept = auth.signup_email("kept@example.com")
        gone = auth.signup_email("gone@example.com")
        auth.hard_delete(gone)
        anonymous = [auth.signup_anonymous() for _ in range(120)]
    head.sql("UPDATE auth.users SET created_at = now() - interval '40 days' WHERE is_anonymous")
    with head.auth() as auth:
        assert auth.cleanup_anonymous_users() == 100
    assert profile(head, gone) is None and profile(head, kept) is not None
    left = head.value("SELECT count(*) FROM auth.users WHERE is_anonymous")
    assert left == 20 and head.value("SELECT count(*) FROM public.users WHERE id = ANY(%s::uuid[])",
                                     ([str(a) for a in anonymous],)) == 20
    assert_in_step(head)
