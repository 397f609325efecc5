"""The sync functions' cheap paths keep every guarantee.

- The signup sync writes the profile with a plain INSERT: a profile already
  there for the account is taken for success (nothing recorded, nothing
  overwritten), any other unique violation is a failure recorded as before.
- Whether the profile table has deferred constraints (signup and update
  syncs), and whether its foreign key to auth.users refuses deletes (delete
  sync), is read once a transaction and remembered in a transaction-local
  setting: the answer never outlives the transaction, so a constraint the app
  adds between two transactions of the same session is honoured by the next.
- A bulk delete of anonymous users (the auth service's cleanup) reads the key
  once, not once a row, and still removes every profile first where the key
  would refuse the delete.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from ghostsync.testing.supabase import (
    APP_PROFILES_FK_WITHOUT_CASCADE_SQL,
    APP_PROFILES_SQL,
    APP_UNIQUE_EMAIL_DEFERRED_SQL,
)
from tests.seeding import failures, ghost_count


def orphans(db) -> int:
    return int(db.value("SELECT count(*) FROM public.users p WHERE NOT EXISTS "
                        "(SELECT 1 FROM auth.users u WHERE u.id = p.id)"))


def test_a_profile_already_there_is_the_signup_syncs_success(db):
    db.upgrade()
    uid = uuid.uuid4()
    # the app wrote the profile first (its own signup flow, an import)
    db.sql("SET session_replication_role = replica; INSERT INTO public.users (id, email, email_verified) "
           "VALUES (%s, 'from-the-app@example.com', false)", (str(uid),))
    with db.auth() as auth:
        auth.signup_email("signed.up@example.com", user_id=uid, session=False)
    assert failures(db) == []
    # ghostsync's synced columns follow the account (issue 18 §2: a profile already there gets them written,
    # it is no longer left stale); the row itself stays the one the app wrote
    assert db.value("SELECT email FROM public.users WHERE id = %s", (str(uid),)) == "signed.up@example.com"
    assert ghost_count(db) == 0


def test_the_remembered_answer_about_deferred_constraints_ends_with_its_transaction(db):
    db.sql(APP_PROFILES_SQL, user="postgres")
    db.upgrade()
    with db.auth() as auth:  # one session for everything below, as the auth service keeps its connections
        first = auth.signup_email("shared@example.com", autoconfirm=True, session=False)
        assert db.value("SELECT current_setting('ghostsync.deferred_profile_constraints', true)") in (None, "")
        # between two transactions of that session, the app adds a deferred UNIQUE on email
        db.sql(APP_UNIQUE_EMAIL_DEFERRED_SQL, user="postgres")
        twin = auth.signup_sso("shared@example.com")  # the signup and its confirmation: both syncs
        again = auth.signup_email("other@example.com", autoconfirm=True, session=False)
    assert db.value("SELECT count(*) FROM auth.users WHERE email = 'shared@example.com'") == 2
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(first),)) == 1
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(twin),)) == 0
    [(user_id, _operation, sqlstate, message, _count)] = failures(db)
    assert (user_id, sqlstate) == (str(twin), "23505") and "users_email_key" in message
    assert db.value("SELECT email_verified FROM public.users WHERE id = %s", (str(again),)) is True


def test_a_cleanup_of_100_accounts_removes_their_profiles_before_a_key_that_refuses_deletes(db):
    db.sql(APP_PROFILES_FK_WITHOUT_CASCADE_SQL, user="postgres")
    db.upgrade()
    with db.auth() as auth:
        for _ in range(120):
            auth.signup_anonymous()
        db.sql("UPDATE auth.users SET created_at = now() - interval '40 days' WHERE is_anonymous",
               user="supabase_auth_admin")
        assert auth.cleanup_anonymous_users() == 100  # one statement, 100 accounts, a key that refuses deletes
        assert auth.cleanup_anonymous_users(timedelta(days=30)) == 20
    assert db.value("SELECT count(*) FROM auth.users") == 0
    assert db.value("SELECT count(*) FROM public.users") == 0
    assert orphans(db) == 0 and failures(db) == []


def test_the_remembered_answer_about_the_key_ends_with_its_transaction(db):
    db.sql(APP_PROFILES_SQL, user="postgres")  # a cascading key first: the delete sync leaves it to the key
    db.upgrade()
    with db.auth() as auth:
        ids = [auth.signup_email(f"u{i}@example.com", session=False) for i in range(3)]
        auth.hard_delete(ids[0])
        # between two transactions of that session, the app makes its key refuse deletes
        db.sql("ALTER TABLE public.users DROP CONSTRAINT users_id_fkey; ALTER TABLE public.users ADD CONSTRAINT "
               "users_id_fkey FOREIGN KEY (id) REFERENCES auth.users (id)", user="postgres")
        auth.hard_delete(ids[1])  # refused by the key unless the delete sync removes the profile first
    assert db.value("SELECT count(*) FROM public.users") == 1
    assert orphans(db) == 0 and failures(db) == []
