"""The sync functions' cheap paths keep every guarantee.

- The signup sync writes the profile with a plain INSERT: a profile already
  there for the account is taken for success (nothing recorded, nothing
  overwritten), any other unique violation is a failure recorded as before.
- Whether the profile table has deferred constraints (signup and update
  syncs) is read once a transaction and remembered in a transaction-local
  setting: the answer never outlives the transaction, so a constraint the app
  adds between two transactions of the same session is honoured by the next.
  (The delete sync keeps no such answer since ghostsync_0011: tests/test_deletes.py.)
"""

from __future__ import annotations

import uuid

from ghostsync.testing.supabase import APP_PROFILES_SQL, APP_UNIQUE_EMAIL_DEFERRED_SQL
from tests.seeding import failures, ghost_count


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
