"""What apps put on their profile table: deferred constraints, CHECKs, app triggers never fail an auth write."""

from __future__ import annotations

import psycopg2
import pytest

from ghostsync.testing.supabase import APP_CHECKS_SQL, APP_PROFILES_SQL, APP_UNIQUE_EMAIL_DEFERRED_SQL
from tests.seeding import failures, ghostsync_cli


@pytest.fixture
def deferred_unique(db):
    db.sql(APP_PROFILES_SQL + APP_UNIQUE_EMAIL_DEFERRED_SQL, user="postgres")
    db.upgrade()
    return db


def test_a_deferred_unique_email_does_not_fail_an_sso_signup_at_commit(deferred_unique):
    db = deferred_unique
    with db.auth() as auth:
        first = auth.signup(email="shared@example.com", confirmed=True)
        twin = auth.signup_sso("shared@example.com")
    assert db.value("SELECT count(*) FROM auth.users WHERE email = 'shared@example.com'") == 2
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(first),)) == 1
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(twin),)) == 0
    [(user_id, _operation, sqlstate, message, _count)] = failures(db)
    assert (user_id, sqlstate) == (str(twin), "23505") and "users_email_key" in message
    assert ghostsync_cli(db, "status").returncode == 1


def test_the_deferred_constraint_stays_deferred_for_the_rest_of_the_transaction(deferred_unique):
    """ghostsync checks it early inside its own block, then puts it back: the app's own statements later in the
    same transaction are still checked at COMMIT, as the app designed."""
    db = deferred_unique
    with db.auth() as auth:
        a = auth.signup(email="a@example.com", confirmed=True)
        b = auth.signup(email="b@example.com", confirmed=True)
    conn = psycopg2.connect(db.url("supabase_admin"))  # one transaction doing both the auth write and the app's
    try:
        with conn.cursor() as cur:
            # a signup (ghostsync's trigger runs SET CONSTRAINTS inside its block) ...
            cur.execute("INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at, "
                        "is_sso_user, is_anonymous) VALUES ('00000000-0000-0000-0000-000000000000', "
                        "gen_random_uuid(), 'authenticated', '', 'c@example.com', now(), now(), false, false)")
            # ... then the app swaps two emails in two steps, which only a deferred UNIQUE allows
            cur.execute("UPDATE public.users SET email = 'b@example.com' WHERE id = %s", (str(a),))
            cur.execute("UPDATE public.users SET email = 'a@example.com' WHERE id = %s", (str(b),))
        conn.commit()
    finally:
        conn.close()
    assert db.value("SELECT email FROM public.users WHERE id = %s", (str(a),)) == "b@example.com"


def test_app_checks_record_the_soft_delete_they_reject_and_let_it_commit(db):
    db.sql(APP_PROFILES_SQL + APP_CHECKS_SQL, user="postgres")
    db.upgrade()
    with db.auth() as auth:
        uid = auth.signup(email="leaving@example.com", confirmed=True)
        auth.soft_delete(uid)  # the obfuscated email has no '@': the app's format CHECK rejects it
    assert db.value("SELECT deleted_at IS NOT NULL FROM auth.users WHERE id = %s", (str(uid),)) is True
    [(user_id, operation, sqlstate, message, _)] = failures(db)
    assert (user_id, operation, sqlstate) == (str(uid), "UPDATE", "23514")
    assert "users_email_format" in message
    assert "@" not in message and "leaving" not in message, "no row data in the record"
