"""The auth-service client writes the auth tables as GoTrue does, path by path (gotrue.md), on a
database without ghostsync: which statements, in which order, in how many transactions, and what
they leave in auth.users, identities, sessions, refresh_tokens, audit_log_entries, one_time_tokens
and mfa_amr_claims. Row triggers (as superuser, for the test only) record every write to auth.users:
the columns each UPDATE changed, the transaction it ran in, and which statements had email in SET."""

from __future__ import annotations

import re
import uuid

import psycopg2
import psycopg2.extras
import pytest

from ghostsync.testing.authservice import (
    AUTH_ROLE,
    USER_COLUMNS,
    AuthService,
    AuthServiceError,
    obfuscate_email,
    obfuscate_phone,
)

RECORDER = """
CREATE TABLE public.auth_writes (
  n bigserial PRIMARY KEY,
  op text NOT NULL,
  id uuid,
  changed text[],
  new jsonb,
  affected bigint,
  xid bigint NOT NULL DEFAULT txid_current()
);
CREATE FUNCTION public.record_auth_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO public.auth_writes (op, id, new) VALUES ('INSERT', NEW.id, to_jsonb(NEW));
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO public.auth_writes (op, id, changed, new) VALUES ('UPDATE', NEW.id,
      ARRAY(SELECT e.key FROM jsonb_each(to_jsonb(NEW)) AS e
            WHERE to_jsonb(OLD) -> e.key IS DISTINCT FROM e.value
              AND e.key NOT IN ('updated_at', 'confirmed_at') ORDER BY e.key),
      to_jsonb(NEW));
  ELSE
    INSERT INTO public.auth_writes (op, id, new) VALUES ('DELETE', OLD.id, to_jsonb(OLD));
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER record_auth_write AFTER INSERT OR UPDATE OR DELETE ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.record_auth_write();

CREATE FUNCTION public.record_email_in_set() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.auth_writes (op, id) VALUES ('UPDATE OF email', NEW.id);
  RETURN NULL;
END
$$;
CREATE TRIGGER record_email_in_set AFTER UPDATE OF email ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.record_email_in_set();

CREATE FUNCTION public.record_delete_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.auth_writes (op, affected) VALUES ('DELETE statement', (SELECT count(*) FROM gone));
  RETURN NULL;
END
$$;
CREATE TRIGGER record_delete_statement AFTER DELETE ON auth.users
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION public.record_delete_statement();
"""

HASH43 = re.compile(r"^[A-Za-z0-9_-]{43}$")
HASH15 = re.compile(r"^[A-Za-z0-9_-]{15}$")
VECTOR_ID = uuid.UUID("11111111-2222-4333-8444-555555555555")


@pytest.fixture
def rec(db):
    db.sql(RECORDER)
    return db


@pytest.fixture
def auth(rec):
    with rec.auth() as client:
        yield client


def writes(db, uid, *ops):
    """(op, changed columns, xid) of every recorded write to ``uid``'s auth.users row, in order."""
    rows = db.sql("SELECT op, changed, xid FROM public.auth_writes WHERE id = %s ORDER BY n", (str(uid),))
    return [(op, tuple(changed) if changed is not None else None, xid) for op, changed, xid in rows
            if not ops or op in ops]


def updates(db, uid):
    """The changed columns of each UPDATE of ``uid``, in order."""
    return [changed for op, changed, _ in writes(db, uid, "UPDATE")]


def xids(db, uid):
    return list(dict.fromkeys(xid for _, _, xid in writes(db, uid)))


def first_insert(db, uid):
    return db.value("SELECT new FROM public.auth_writes WHERE id = %s AND op = 'INSERT' ORDER BY n LIMIT 1",
                    (str(uid),))


def email_in_set(db, uid):
    return len(writes(db, uid, "UPDATE OF email"))


def user(db, uid):
    rows = db.sql("SELECT * FROM auth.users WHERE id = %s", (str(uid),))
    if not rows:
        return None
    names = [r[0] for r in db.sql("SELECT attname FROM pg_attribute WHERE attrelid = 'auth.users'::regclass "
                                  "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]
    return dict(zip(names, rows[0], strict=True))


def count(db, table, uid, column="user_id"):
    return db.value(f"SELECT count(*) FROM auth.{table} WHERE {column}::text = %s", (str(uid),))


def audit_actions(db, uid):
    return [r[0] for r in db.sql("SELECT payload->>'action' FROM auth.audit_log_entries "
                                 "WHERE payload->>'actor_id' = %s OR payload->'traits'->>'user_id' = %s "
                                 "ORDER BY created_at", (str(uid), str(uid)))]


def index_of(changes, column):
    return next(i for i, changed in enumerate(changes) if column in changed)


# -- signups -------------------------------------------------------------------------------------

def test_unconfirmed_email_signup(rec, auth):
    uid = auth.signup(email="New.User@Example.com", user_meta={"full_name": "New User"})
    inserted = first_insert(rec, uid)
    assert inserted["email_confirmed_at"] is None and inserted["role"] == ""
    assert inserted["email"] == "new.user@example.com"  # NewUser lowercases
    assert updates(rec, uid) == [
        ("role",),                                       # SetRole
        ("raw_user_meta_data",),                         # RemoveUnconfirmedIdentities: the identity's data
        (),                                              # ... providers (unchanged, written anyway)
        ("confirmation_sent_at", "confirmation_token"),  # sendConfirmation
    ]
    assert len(xids(rec, uid)) == 1, "one transaction"
    row = user(rec, uid)
    assert row["email_confirmed_at"] is None and row["role"] == "authenticated"
    assert row["raw_user_meta_data"]["full_name"] == "New User"
    assert row["raw_user_meta_data"]["email_verified"] is False
    [(provider, provider_id, data)] = rec.sql("SELECT provider, provider_id, identity_data FROM auth.identities "
                                              "WHERE user_id = %s", (str(uid),))
    assert (provider, provider_id, data["email"], data["email_verified"]) == ("email", str(uid),
                                                                             "new.user@example.com", False)
    assert audit_actions(rec, uid) == ["user_confirmation_requested"]
    assert rec.value("SELECT token_type::text FROM auth.one_time_tokens WHERE user_id = %s", (str(uid),)) == \
        "confirmation_token"
    assert count(rec, "sessions", uid) == 0


def test_autoconfirmed_email_signup_then_its_session(rec, auth):
    uid = auth.signup(email="auto@example.com", confirmed=True)
    assert first_insert(rec, uid)["email_confirmed_at"] is None
    assert updates(rec, uid) == [("role",), ("raw_user_meta_data",), (), ("email_confirmed_at",),
                                 ("raw_user_meta_data",), ("last_sign_in_at",)]
    tx = [xid for _, _, xid in writes(rec, uid)]
    assert len(set(tx[:-1])) == 1 and tx[-1] != tx[0], "Confirm in the signup's transaction, the session in a second"
    row = user(rec, uid)
    assert row["email_confirmed_at"] is not None and row["raw_user_meta_data"]["email_verified"] is True
    assert audit_actions(rec, uid) == ["user_signedup", "login"]
    assert count(rec, "sessions", uid) == 1 and count(rec, "refresh_tokens", uid) == 1
    assert count(rec, "one_time_tokens", uid) == 0
    assert rec.value("SELECT authentication_method FROM auth.mfa_amr_claims c JOIN auth.sessions s "
                     "ON s.id = c.session_id WHERE s.user_id = %s", (str(uid),)) == "password"


def test_phone_signups(rec, auth):
    pending = auth.signup(phone="+15550000001")
    confirmed = auth.signup_phone("+15550000002", autoconfirm=True)
    row = user(rec, pending)
    assert (row["email"], row["phone"], row["phone_confirmed_at"]) == (None, "+15550000001", None)
    assert updates(rec, pending)[-1] == ("confirmation_sent_at", "confirmation_token")
    assert updates(rec, confirmed)[3] == ("phone_confirmed_at",)
    assert user(rec, confirmed)["phone_confirmed_at"] is not None
    assert rec.value("SELECT provider FROM auth.identities WHERE user_id = %s", (str(pending),)) == "phone"
    assert count(rec, "sessions", confirmed) == 1 and count(rec, "sessions", pending) == 0


def test_anonymous_signup(rec, auth):
    uid = auth.signup(anonymous=True)
    inserted = first_insert(rec, uid)
    assert (inserted["is_anonymous"], inserted["email"], inserted["phone"]) == (True, None, None)
    assert inserted["raw_app_meta_data"] == {}
    assert updates(rec, uid) == [("role",), ("last_sign_in_at",)]
    assert len(xids(rec, uid)) == 1, "user and session in one transaction"
    assert count(rec, "identities", uid) == 0
    assert audit_actions(rec, uid) == []
    assert count(rec, "sessions", uid) == 1


def test_sso_signup(rec, auth):
    uid = auth.signup(email="Sso@Example.com", sso=True)
    inserted = first_insert(rec, uid)
    assert (inserted["is_sso_user"], inserted["email_confirmed_at"], inserted["encrypted_password"]) == (True, None, "")
    # role; RemoveUnconfirmedIdentities: password NULL, metadata (the identity's claims, email lowercased by
    # Identity.BeforeCreate), providers (already so); Confirm: email_confirmed_at, email_verified (the
    # IdP's claims already say so); the session
    assert updates(rec, uid) == [("role",), ("encrypted_password",), ("raw_user_meta_data",), (),
                                 ("email_confirmed_at",), (), ("last_sign_in_at",)]
    assert len(xids(rec, uid)) == 1
    row = user(rec, uid)
    assert row["encrypted_password"] is None and row["raw_app_meta_data"]["provider"].startswith("sso:")
    assert rec.value("SELECT provider FROM auth.identities WHERE user_id = %s", (str(uid),)).startswith("sso:")
    assert count(rec, "sessions", uid) == 1


def test_oauth_signup_with_an_unverified_email_commits_and_fails(rec, auth):
    with pytest.raises(AuthServiceError) as err:
        auth.signup_external("github", "unverified@example.com", email_verified=False)
    assert err.value.committed and err.value.status == 422
    uid = rec.value("SELECT id FROM auth.users WHERE email = 'unverified@example.com'")
    row = user(rec, uid)
    assert row["email_confirmed_at"] is None and row["is_sso_user"] is False and row["confirmation_token"]
    assert count(rec, "sessions", uid) == 0
    verified = auth.signup_external("google", "verified@example.com")
    assert user(rec, verified)["email_confirmed_at"] is not None and count(rec, "sessions", verified) == 1


@pytest.mark.parametrize("email_confirm", [False, True])
def test_admin_create(rec, auth, email_confirm):
    uid = auth.admin_create_user(email="made@example.com", email_confirm=email_confirm)
    assert first_insert(rec, uid)["email_confirmed_at"] is None
    expected = [("role",)] + ([("email_confirmed_at",), ("raw_user_meta_data",)] if email_confirm else [])
    assert updates(rec, uid) == expected
    assert len(xids(rec, uid)) == 1
    assert (user(rec, uid)["email_confirmed_at"] is not None) is email_confirm
    assert rec.value("SELECT payload->>'actor_username' FROM auth.audit_log_entries "
                     "WHERE payload->'traits'->>'user_id' = %s", (str(uid),)) == "service_role"
    assert count(rec, "sessions", uid) == 0


# -- confirmations, email changes ----------------------------------------------------------------

def test_confirm_email(rec, auth):
    uid = auth.signup(email="confirm@example.com")
    before = len(writes(rec, uid))
    session = auth.confirm_email(uid)
    assert updates(rec, uid)[-4:] == [("confirmation_token", "email_confirmed_at"), ("raw_user_meta_data",), (),
                                      ("last_sign_in_at",)]
    assert len({xid for _, _, xid in writes(rec, uid)[before:]}) == 1
    assert rec.value("SELECT identity_data->>'email_verified' FROM auth.identities WHERE user_id = %s",
                     (str(uid),)) == "true"
    assert count(rec, "one_time_tokens", uid) == 0
    assert rec.value("SELECT user_id::text FROM auth.sessions WHERE id = %s", (str(session.id),)) == str(uid)


def test_email_change_waits_in_email_change_then_confirms(rec, auth):
    uid = auth.signup(email="old@example.com", confirmed=True)
    auth.request_email_change(uid, "new@example.com")
    row = user(rec, uid)
    assert (row["email"], row["email_change"], row["email_change_confirm_status"]) == \
        ("old@example.com", "new@example.com", 0)
    assert row["email_change_token_current"] and row["email_change_token_new"]
    assert email_in_set(rec, uid) == 0
    assert auth.verify_email_change(uid, which="current") is None  # secure change: one link of two
    assert user(rec, uid)["email_change_confirm_status"] == 1 and user(rec, uid)["email"] == "old@example.com"
    assert auth.verify_email_change(uid, which="new") is not None
    row = user(rec, uid)
    assert (row["email"], row["email_change"], row["email_change_confirm_status"]) == ("new@example.com", "", 0)
    assert email_in_set(rec, uid) == 1
    assert rec.value("SELECT identity_data->>'email' FROM auth.identities WHERE user_id = %s AND provider = 'email'",
                     (str(uid),)) == "new@example.com"
    # change_email does both steps
    auth.change_email(uid, "third@example.com")
    assert user(rec, uid)["email"] == "third@example.com"


def test_email_change_confirms_an_unconfirmed_user(rec, auth):
    uid = auth.signup(email="unconfirmed@example.com")
    auth.change_email(uid, "changed@example.com")
    changes = updates(rec, uid)
    assert index_of(changes, "email") < index_of(changes, "email_confirmed_at")
    assert user(rec, uid)["email_confirmed_at"] is not None


def test_admin_email_change_keeps_email_confirmed_at(rec, auth):
    uid = auth.signup(email="kept@example.com", confirmed=True)
    confirmed_at = user(rec, uid)["email_confirmed_at"]
    auth.admin_change_email(uid, "admin-set@example.com")
    row = user(rec, uid)
    assert (row["email"], row["email_confirmed_at"]) == ("admin-set@example.com", confirmed_at)
    assert updates(rec, uid)[-1] == ("email",)
    assert email_in_set(rec, uid) == 1


# -- anonymous to permanent ----------------------------------------------------------------------

def test_anonymous_to_permanent_through_email_change(rec, auth):
    uid = auth.signup(anonymous=True)
    auth.request_email_change(uid, "permanent@example.com")
    row = user(rec, uid)
    assert (row["email"], row["email_change"], row["is_anonymous"]) == (None, "permanent@example.com", True)
    mark = len(updates(rec, uid))
    session = auth.verify_email_change(uid)
    assert session is not None
    changes = updates(rec, uid)[mark:]
    assert changes[:4] == [("is_anonymous",), ("email", "email_change", "email_change_token_new"),
                           ("email_confirmed_at",), ("raw_user_meta_data",)]
    row = user(rec, uid)
    assert (row["email"], row["is_anonymous"]) == ("permanent@example.com", False)
    assert row["email_confirmed_at"] is not None
    assert rec.value("SELECT provider FROM auth.identities WHERE user_id = %s", (str(uid),)) == "email"
    # convert_anonymous is the same two requests
    other = auth.signup(anonymous=True)
    auth.convert_anonymous(other, "other@example.com")
    assert user(rec, other)["email"] == "other@example.com" and len(xids(rec, other)) == 3


def test_anonymous_to_permanent_with_autoconfirm_is_one_request(rec, auth):
    uid = auth.signup(anonymous=True)
    mark = len(xids(rec, uid))
    auth.convert_anonymous(uid, "auto-permanent@example.com", autoconfirm=True)
    assert len(xids(rec, uid)) == mark + 1
    changes = updates(rec, uid)
    assert index_of(changes, "is_anonymous") < index_of(changes, "email") < index_of(changes, "email_confirmed_at")


def test_anonymous_to_permanent_other_orders(rec, auth):
    phone = auth.signup(anonymous=True)
    auth.convert_anonymous_phone(phone, "+15550000009")
    changes = updates(rec, phone)
    one = index_of(changes, "phone")
    assert {"phone", "phone_confirmed_at"} <= set(changes[one]), "phone and its confirmation in one UPDATE"
    assert index_of(changes, "is_anonymous") > one, "is_anonymous after the phone"

    admin = auth.signup(anonymous=True)
    auth.admin_convert_anonymous(admin, "admin-made@example.com")
    changes = updates(rec, admin)
    assert index_of(changes, "email_confirmed_at") < index_of(changes, "is_anonymous") < index_of(changes, "email")

    linked = auth.signup(anonymous=True)
    auth.link_identity(linked, "google", email="linked@example.com")
    changes = updates(rec, linked)
    assert index_of(changes, "email") < index_of(changes, "email_confirmed_at") < index_of(changes, "is_anonymous")
    for uid, email in ((admin, "admin-made@example.com"), (linked, "linked@example.com")):
        row = user(rec, uid)
        assert (row["email"], row["is_anonymous"], row["email_confirmed_at"] is not None) == (email, False, True)


def test_identity_unlink_makes_a_user_unconfirmed_again(rec, auth):
    uid = auth.signup(email="two@example.com", confirmed=True)
    auth.link_identity(uid, "github", email="gh@example.com", email_verified=False)
    assert user(rec, uid)["email"] == "two@example.com"  # a user with an email keeps it when linking
    mark = len(updates(rec, uid))
    auth.unlink_identity(uid, "email")
    changes = updates(rec, uid)[mark:]
    assert changes[0] == ("email",)
    assert changes[2] == ("email_confirmed_at",), "a separate UPDATE sets email_confirmed_at = NULL"
    assert changes[3] == ("raw_user_meta_data",)
    row = user(rec, uid)
    assert (row["email"], row["email_confirmed_at"]) == ("gh@example.com", None)
    assert row["raw_user_meta_data"]["email_verified"] is False
    assert count(rec, "identities", uid) == 1
    assert audit_actions(rec, uid)[-1] == "identity_unlinked"


# -- sessions --------------------------------------------------------------------------------------

def test_sign_in(rec, auth):
    uid = auth.signup(email="signin@example.com", confirmed=True)
    mark = len(writes(rec, uid))
    session = auth.sign_in(uid)
    assert [(op, changed) for op, changed, _ in writes(rec, uid)[mark:]] == [("UPDATE", ("last_sign_in_at",))]
    token, parent, revoked, session_id = rec.sql(
        "SELECT token, parent, revoked, session_id FROM auth.refresh_tokens WHERE token = %s",
        (session.refresh_token,))[0]
    assert (len(token), parent, revoked, session_id) == (12, None, False, str(session.id))
    ip, aal = rec.sql("SELECT host(ip), aal::text FROM auth.sessions WHERE id = %s", (str(session.id),))[0]
    assert (ip, aal) == ("127.0.0.1", "aal1")
    assert audit_actions(rec, uid)[-1] == "login"
    assert count(rec, "sessions", uid) == 2


def test_legacy_token_refresh(rec, auth):
    uid = auth.signup(email="refresh@example.com", confirmed=True)
    first = auth.sign_in(uid)
    last_sign_in = user(rec, uid)["last_sign_in_at"]
    mark = len(writes(rec, uid))
    second = auth.refresh(first)
    assert second.id == first.id and second.refresh_token != first.refresh_token
    # the users UPDATE rewrites last_sign_in_at unchanged: only updated_at moves, no UPDATE OF email
    assert [(op, changed) for op, changed, _ in writes(rec, uid)[mark:]] == [("UPDATE", ())]
    assert user(rec, uid)["last_sign_in_at"] == last_sign_in
    tokens = {r[0]: r[1:] for r in rec.sql("SELECT token, revoked, parent FROM auth.refresh_tokens "
                                           "WHERE session_id = %s", (str(first.id),))}
    assert tokens[first.refresh_token] == (True, None)
    assert tokens[second.refresh_token] == (False, first.refresh_token)
    assert rec.value("SELECT refreshed_at IS NOT NULL FROM auth.sessions WHERE id = %s", (str(first.id),))
    assert audit_actions(rec, uid)[-2:] == ["token_refreshed", "token_revoked"]
    # the parent of the active token may be used again: the active token comes back, nothing new is issued
    again = auth.refresh(first)
    assert again.refresh_token == second.refresh_token
    assert count(rec, "refresh_tokens", first.id, "session_id") == 2
    # an older revoked token outside the reuse interval revokes the whole session, and that commits
    third = auth.refresh(second)
    rec.sql("UPDATE auth.refresh_tokens SET updated_at = now() - interval '1 minute' WHERE token = %s",
            (first.refresh_token,))
    with pytest.raises(AuthServiceError) as err:
        auth.refresh(first)
    assert err.value.committed
    assert rec.value("SELECT bool_and(revoked) FROM auth.refresh_tokens WHERE session_id = %s",
                     (str(first.id),)) is True
    assert third.id == first.id


def test_logout_cascades_to_tokens_and_claims(rec, auth):
    uid = auth.signup(email="bye@example.com", confirmed=True)
    session = auth.sign_in(uid)
    auth.logout(session)
    assert rec.value("SELECT count(*) FROM auth.refresh_tokens WHERE session_id = %s", (str(session.id),)) == 0
    assert rec.value("SELECT count(*) FROM auth.mfa_amr_claims WHERE session_id = %s", (str(session.id),)) == 0


# -- deletes -----------------------------------------------------------------------------------------

def test_soft_delete_obfuscates_as_soft_delete_user(rec, auth):
    uid = auth.signup(email="a@example.com", confirmed=True, user_id=VECTOR_ID, user_meta={"full_name": "A"})
    auth.sign_in(uid)
    mark = len(updates(rec, uid))
    auth.soft_delete(uid)
    row = user(rec, uid)
    # the published vector (a Python re-implementation of obfuscateValue checked against Go's)
    assert row["email"] == "QZYI59uAef4ofQT28jGw6v0-T9hfMNcjoVeE-usAiw4" == obfuscate_email(uid, "a@example.com")
    assert HASH43.match(row["email"]) and "@" not in row["email"]
    assert row["phone"] == obfuscate_phone(uid, "") and HASH15.match(row["phone"])  # non-NULL for an email user
    assert row["email_change"] == obfuscate_email(uid, "") and HASH43.match(row["email_change"])
    assert HASH15.match(row["phone_change"])
    assert row["deleted_at"] is not None and row["encrypted_password"] is None
    assert row["email_confirmed_at"] is not None, "soft delete leaves the confirmation"
    assert (row["raw_user_meta_data"], row["raw_app_meta_data"]) == ({}, {})
    changes = updates(rec, uid)[mark:]
    assert {"email", "phone", "deleted_at", "email_change", "phone_change", "encrypted_password"} <= set(changes[0])
    assert changes[1:] == [("raw_user_meta_data",), ("raw_app_meta_data",)], "metadata cleared in later UPDATEs"
    assert email_in_set(rec, uid) == 1
    assert count(rec, "sessions", uid) == 0
    provider_id, data = rec.sql("SELECT provider_id, identity_data FROM auth.identities WHERE user_id = %s",
                                (str(uid),))[0]
    assert HASH43.match(provider_id) and data == {}
    assert audit_actions(rec, uid)[-1] == "user_deleted"
    auth.soft_delete(uid)  # already deleted: only the audit row
    assert updates(rec, uid)[mark:] == changes

    # a phone user and an anonymous user get a non-NULL email too
    auth.hard_delete(uid)
    phone = auth.signup(phone="+15555550100", user_id=VECTOR_ID)
    auth.soft_delete(phone)
    row = user(rec, phone)
    assert row["phone"] == "euBEJtlPj08t3Hj"
    assert row["email"] == "z0xHMv07j4pVtghxlQovIsiT6nr9ddIUaCZTTj9nzEk"
    anonymous = auth.signup(anonymous=True)
    auth.soft_delete(anonymous)
    assert HASH43.match(user(rec, anonymous)["email"])


def test_hard_delete_cascades_and_keeps_the_audit(rec, auth):
    uid = auth.signup(email="gone@example.com", confirmed=True)
    session = auth.sign_in(uid)
    auth.hard_delete(uid)
    assert user(rec, uid) is None
    assert writes(rec, uid, "DELETE")[0][0] == "DELETE"
    for table in ("identities", "sessions", "one_time_tokens"):
        assert count(rec, table, uid) == 0
    assert count(rec, "refresh_tokens", session.id, "session_id") == 0
    assert count(rec, "mfa_amr_claims", session.id, "session_id") == 0
    assert audit_actions(rec, uid)[-1] == "user_deleted"


def test_anonymous_cleanup_deletes_up_to_100_in_one_statement(rec, auth):
    rec.sql("INSERT INTO auth.users (id, aud, role, is_anonymous, created_at, updated_at) "
            "SELECT gen_random_uuid(), 'authenticated', 'authenticated', true, now() - interval '31 days', now() "
            "FROM generate_series(1, 120)")
    rec.sql("INSERT INTO auth.users (id, aud, role, is_anonymous, created_at, updated_at, email) "
            "SELECT gen_random_uuid(), 'authenticated', 'authenticated', false, now() - interval '31 days', now(), "
            "'old' || g || '@example.com' FROM generate_series(1, 3) AS g")
    young = auth.signup(anonymous=True)
    assert auth.cleanup_anonymous_users() == 100
    assert auth.cleanup_anonymous_users() == 20
    assert auth.cleanup_anonymous_users() == 0
    statements = [r[0] for r in rec.sql("SELECT affected FROM public.auth_writes WHERE op = 'DELETE statement' "
                                        "ORDER BY n")]
    assert statements == [100, 20, 0], "each cleanup is one DELETE statement"
    assert user(rec, young) is not None
    assert rec.value("SELECT count(*) FROM auth.users WHERE NOT is_anonymous") == 3
    assert auth.cleanup_anonymous_users(older_than="0 seconds") == 1


# -- how the statements are written ---------------------------------------------------------------

def test_every_statement_names_its_columns_and_no_schema(db):
    statements: list[str] = []

    class Log:
        def write(self, text):
            statements.append(text.decode() if isinstance(text, bytes) else text)

    with db.auth() as auth:
        auth.conn.close()
        auth.conn = psycopg2.connect(db.url(AUTH_ROLE), connection_factory=psycopg2.extras.LoggingConnection)
        auth.conn.initialize(Log())
        uid = auth.signup(email="log@example.com")
        auth.confirm_email(uid)
        session = auth.sign_in(uid)
        auth.refresh(session)
        auth.change_email(uid, "log2@example.com")
        auth.soft_delete(uid)
        auth.hard_delete(uid)
    writes_ = [s for s in statements if re.match(r"(?is)\s*(insert|update|delete)", s)]
    assert writes_
    for statement in writes_:
        assert "auth." not in statement, statement
    user_updates = [s for s in writes_ if s.startswith('UPDATE "users"')]
    assert user_updates
    for statement in user_updates:
        columns = re.findall(r'"(\w+)" = ', statement)
        assert columns == sorted(columns) and "updated_at" in columns, statement
        assert len(columns) < len(USER_COLUMNS) // 2, statement
        assert re.search(r"WHERE users\.id = '", statement), statement
    [insert] = [s for s in writes_ if s.startswith('INSERT INTO "users"')]
    assert re.findall(r'"(\w+)"', insert.split("VALUES")[0])[1:] == sorted(USER_COLUMNS)


def test_qualified_table_and_a_hostile_search_path(db):
    """``table="auth.users"`` qualifies every auth table, so a search_path that puts another schema
    first changes nothing the client writes."""
    db.sql("CREATE SCHEMA decoy; CREATE TABLE decoy.users (LIKE auth.users); "
           "CREATE TABLE decoy.identities (LIKE auth.identities); GRANT USAGE ON SCHEMA decoy TO PUBLIC; "
           "GRANT ALL ON ALL TABLES IN SCHEMA decoy TO PUBLIC")
    with AuthService(db.url(AUTH_ROLE), table="auth.users", options="-c search_path=decoy,auth") as auth:
        uid = auth.signup(email="qualified@example.com", confirmed=True)
        auth.change_email(uid, "qualified2@example.com")
        auth.refresh(auth.sign_in(uid))
        auth.soft_delete(uid)
    assert db.value("SELECT count(*) FROM decoy.users") == 0
    assert db.value("SELECT count(*) FROM decoy.identities") == 0
    assert db.value("SELECT deleted_at IS NOT NULL FROM auth.users WHERE id = %s", (str(uid),)) is True


def test_a_failing_trigger_rolls_the_whole_signup_back(rec, auth):
    rec.sql("CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'boom'; END$$; "
            "CREATE TRIGGER boom AFTER UPDATE OF email_confirmed_at ON auth.users "
            "FOR EACH ROW EXECUTE FUNCTION public.boom()")
    with pytest.raises(psycopg2.errors.RaiseException):
        auth.signup(email="rolled-back@example.com", confirmed=True)
    assert rec.value("SELECT count(*) FROM auth.users WHERE email = 'rolled-back@example.com'") == 0
    assert rec.value("SELECT count(*) FROM auth.identities WHERE email = 'rolled-back@example.com'") == 0
