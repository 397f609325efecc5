"""Writes to the ``auth`` schema made the way Supabase's auth service (GoTrue) makes them.

The source is supabase/auth (``internal/models``, ``internal/api``, ``internal/tokens``,
at bc32168e, after v2.196.0) and the ORM it writes through, gobuffalo/pop v6.1.1. What
each path writes, statement by statement, is listed in the research notes the project
keeps (``gotrue.md``); every method here names the GoTrue function it follows.

How GoTrue writes, and so how this client writes:

- It connects as ``supabase_auth_admin`` and names tables without a schema (its
  ``search_path`` is ``auth``); pop quotes them (``"users"``), raw SQL does not.
- Every UPDATE of a model names its columns (pop's ``UpdateOnly``): ``UPDATE "users"
  AS users SET "<col>" = ..., "updated_at" = ... WHERE users.id = ...``, the columns
  sorted by name, ``updated_at`` always among them. No path UPDATEs every column.
- An INSERT writes every writable column (``confirmed_at`` and ``identities.email``
  are generated and left out), sorted by name.
- Timestamps come from Go's clock (here Python's, in UTC), not from SQL ``now()``;
  only the refresh-token revocation and the cleanup statements use ``now()``.
- A request is one transaction (nested ``Transaction`` calls are flattened, no
  savepoints); an error raised anywhere, by a trigger too, rolls all of it back:
  the user sees "Database error saving new user". Where GoTrue uses
  ``NewCommitWithError`` the transaction commits and the request still fails; here
  that raises ``AuthServiceError`` with ``committed=True``.

Configuration modelled: ``GOTRUE_JWT_DEFAULT_GROUP_NAME`` = ``authenticated``,
secure email change on, refresh-token algorithm v1 (the default: 12-character
legacy tokens, a ``refresh_tokens`` row per token), audit log in Postgres, implicit
flow (no PKCE flow state), no hooks. ``autoconfirm`` (``MAILER_AUTOCONFIRM``,
``SMS_AUTOCONFIRM``) is a per-call argument.

Not written because the fixture has no such tables: ``mfa_factors``,
``webauthn_credentials``, ``flow_state`` (soft delete's DELETEs from the first two
are skipped).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import string
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg2
import psycopg2.extensions

AUTH_ROLE = "supabase_auth_admin"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
AUDIENCE = "authenticated"
DEFAULT_GROUP_NAME = "authenticated"  # GOTRUE_JWT_DEFAULT_GROUP_NAME's default
BCRYPT_HASH = "$2a$10$" + "x" * 53  # stands in for crypto.GenerateFromPassword (hashed before the transaction)
REFRESH_TOKEN_REUSE_INTERVAL_S = 10  # GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL's default
REFRESH_RETRY_S = 5.0  # tokens.retryLoopDuration

# Every column pop writes on INSERT INTO users (models.User, `rw:"r"` confirmed_at left out).
USER_COLUMNS = (
    "aud", "banned_until", "confirmation_sent_at", "confirmation_token", "created_at", "deleted_at",
    "email", "email_change", "email_change_confirm_status", "email_change_sent_at",
    "email_change_token_current", "email_change_token_new", "email_confirmed_at", "encrypted_password",
    "id", "instance_id", "invited_at", "is_anonymous", "is_sso_user", "last_sign_in_at", "phone",
    "phone_change", "phone_change_sent_at", "phone_change_token", "phone_confirmed_at",
    "raw_app_meta_data", "raw_user_meta_data", "reauthentication_sent_at", "reauthentication_token",
    "recovery_sent_at", "recovery_token", "role", "updated_at",
)
_JSON_COLUMNS = {"raw_app_meta_data", "raw_user_meta_data", "identity_data", "payload"}


class AuthServiceError(Exception):
    """A request the auth service answers with an error.

    ``committed`` is True where GoTrue commits the transaction anyway (``NewCommitWithError``).
    """

    def __init__(self, message: str, *, status: int = 400, code: str = "", committed: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.committed = committed


class _CommitWithError(Exception):
    def __init__(self, error: AuthServiceError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Session:
    """A session the auth service issued: its ``auth.sessions`` id and current refresh token."""

    id: uuid.UUID
    user_id: uuid.UUID
    refresh_token: str


def obfuscate_value(user_id: uuid.UUID | str, value: str) -> str:
    """``models.obfuscateValue``: base64url without padding of SHA-256(id text || value); 43 characters."""
    digest = hashlib.sha256((str(uuid.UUID(str(user_id))) + value).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def obfuscate_email(user_id: uuid.UUID | str, email: str) -> str:
    """``models.obfuscateEmail``."""
    return obfuscate_value(user_id, email)


def obfuscate_phone(user_id: uuid.UUID | str, phone: str) -> str:
    """``models.obfuscatePhone``: the first 15 characters of ``obfuscate_value``."""
    return obfuscate_value(user_id, phone)[:15]


def _now() -> datetime:
    """Go's ``time.Now()``: the client's clock (µs resolution), not the database's ``now()``."""
    return datetime.now(timezone.utc)


def _secure_alphanumeric(length: int) -> str:
    """``crypto.SecureAlphanumeric``."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _token_hash(address: str) -> str:
    """``crypto.GenerateTokenHash(address, otp)``: a hex SHA-224, unique per request."""
    return hashlib.sha224((address + secrets.token_hex(8)).encode()).hexdigest()


def _dicts(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _adapt(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        return json.dumps(value)  # a nil map is JSON null, as JSONMap.Value() writes it
    return value


class AuthService:
    """A client of one database that writes the ``auth`` tables as the auth service does.

    ``table`` is the users table as written (unqualified by default, as the auth service
    writes it); a qualified name such as ``auth.users`` qualifies every auth table the same
    way. ``options`` are libpq options, e.g. ``-c search_path=...``.
    """

    def __init__(self, dsn: str, *, table: str = "users", options: str | None = None,
                 user_agent: str = "ghostsync-test", ip: str = "127.0.0.1") -> None:
        self.dsn = dsn
        self.table = table
        schema, _, name = table.rpartition(".")
        self._schema = schema.strip('"')
        self._users = name.strip('"')
        self.user_agent = user_agent
        self.ip = ip
        self.conn = psycopg2.connect(dsn, options=options) if options else psycopg2.connect(dsn)
        self.last_session: Session | None = None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> AuthService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names ------------------------------------------------------------------------------
    def _q(self, name: str) -> str:
        """A table as pop names it: quoted, ``"users"`` (schema-qualified only if ``table`` is)."""
        name = self._users if name == "users" else name
        return f'"{self._schema}"."{name}"' if self._schema else f'"{name}"'

    def _raw(self, name: str) -> str:
        """A table as GoTrue's raw SQL names it: unquoted."""
        name = self._users if name == "users" else name
        return f"{self._schema}.{name}" if self._schema else name

    # -- transactions -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction (``storage.Connection.Transaction``): commit, or roll back on error;
        ``_CommitWithError`` commits and raises its error (``storage.NewCommitWithError``)."""
        try:
            with self.conn.cursor() as cur:
                yield cur
            self.conn.commit()
        except _CommitWithError as exc:
            self.conn.commit()
            raise exc.error from None
        except BaseException:
            if not self.conn.closed:
                self.conn.rollback()
            raise

    def _transaction(self, *statements: tuple[str, dict[str, Any]]) -> None:
        """Run raw statements in one transaction; ``{table}`` stands for the users table."""
        with self._tx() as cur:
            for sql, params in statements:
                cur.execute(sql.replace("{table}", self.table), params)

    # -- model helpers (internal/models) ------------------------------------------------------
    def _insert(self, cur: Any, table: str, row: dict[str, Any], returning: str | None = None) -> Any:
        """pop ``Create``: every writable column, sorted by name."""
        cols = sorted(row)
        names = ", ".join(f'"{c}"' for c in cols)
        values = ", ".join(f"%({c})s" for c in cols)
        sql = f"INSERT INTO {self._q(table)} ({names}) VALUES ({values})"
        if returning:
            sql += f" returning {returning}"
        cur.execute(sql, {c: _adapt(c, row[c]) for c in cols})
        return cur.fetchone()[0] if returning else None

    def _update_only(self, cur: Any, table: str, row: dict[str, Any], *columns: str) -> None:
        """``storage.Connection.UpdateOnly``: SET the named columns and updated_at (Go's clock)."""
        row["updated_at"] = _now()
        cols = sorted({*columns, "updated_at"})
        sets = ", ".join(f'"{c}" = %({c})s' for c in cols)
        params = {c: _adapt(c, row[c]) for c in cols}
        params["__id"] = row["id"]
        cur.execute(f"UPDATE {self._q(table)} AS {table} SET {sets} WHERE {table}.id = %(__id)s", params)

    def _load_user(self, cur: Any, user_id: uuid.UUID | str) -> dict[str, Any]:
        """``models.FindUserByID`` / ``Reload``."""
        cur.execute(f"SELECT * FROM {self._q('users')} AS users WHERE instance_id = %s and id = %s LIMIT 1",
                    (NIL_UUID, str(user_id)))
        rows = _dicts(cur)
        if not rows:
            raise AuthServiceError("User not found", status=404, code="user_not_found")
        user = rows[0]
        user["id"] = str(user["id"])
        user["instance_id"] = str(user["instance_id"]) if user["instance_id"] else NIL_UUID
        return user

    def _identities(self, cur: Any, user_id: str) -> list[dict[str, Any]]:
        """``models.FindIdentitiesByUserID``."""
        cur.execute(f"SELECT * FROM {self._q('identities')} AS identities WHERE user_id = %s", (user_id,))
        found = _dicts(cur)
        for identity in found:
            identity["id"] = str(identity["id"])
        return found

    def _identity(self, cur: Any, user_id: str, provider: str) -> dict[str, Any] | None:
        """``models.FindIdentityByIdAndProvider(tx, user.ID.String(), provider)``."""
        cur.execute(f"SELECT * FROM {self._q('identities')} AS identities "
                    "WHERE provider_id = %s AND provider = %s LIMIT 1", (user_id, provider))
        rows = _dicts(cur)
        if not rows:
            return None
        identity = rows[0]
        identity["id"] = str(identity["id"])
        return identity

    @staticmethod
    def _new_user(email: str, phone: str, password_hash: str, user_meta: Any,
                  user_id: uuid.UUID | None) -> dict[str, Any]:
        """``models.NewUser``: email lowercased, "" stored as NULL, the rest zero values."""
        now = _now()
        return {
            "id": str(user_id or uuid.uuid4()), "aud": AUDIENCE, "role": "",
            "email": email.lower() or None, "is_sso_user": False, "encrypted_password": password_hash,
            "email_confirmed_at": None, "invited_at": None, "phone": phone or None, "phone_confirmed_at": None,
            "confirmation_token": "", "confirmation_sent_at": None, "recovery_token": "", "recovery_sent_at": None,
            "email_change_token_current": "", "email_change_token_new": "", "email_change": "",
            "email_change_sent_at": None, "email_change_confirm_status": 0, "phone_change_token": "",
            "phone_change": "", "phone_change_sent_at": None, "reauthentication_token": "",
            "reauthentication_sent_at": None, "last_sign_in_at": None, "raw_app_meta_data": None,
            "raw_user_meta_data": dict(user_meta) if user_meta is not None else {},
            "created_at": now, "updated_at": now, "banned_until": None, "deleted_at": None,
            "is_anonymous": False, "instance_id": NIL_UUID,
        }

    def _signup_new_user(self, cur: Any, user: dict[str, Any]) -> dict[str, Any]:
        """``api.signupNewUser``: INSERT users (email_confirmed_at NULL, role ''), ``SetRole``, ``Reload``."""
        self._insert(cur, "users", {c: user[c] for c in USER_COLUMNS})
        user["role"] = DEFAULT_GROUP_NAME
        self._update_only(cur, "users", user, "role")  # User.SetRole
        return self._load_user(cur, user["id"])

    def _create_identity(self, cur: Any, user: dict[str, Any], provider: str,
                         identity_data: dict[str, Any]) -> dict[str, Any]:
        """``api.createNewIdentity`` / ``models.NewIdentity``: provider_id = identity_data["sub"];
        ``BeforeCreate`` lowercases identity_data.email."""
        data = dict(identity_data)
        if isinstance(data.get("email"), str):
            data["email"] = data["email"].lower()
        now = _now()
        identity = {
            "id": str(uuid.uuid4()), "provider_id": str(data["sub"]), "user_id": user["id"],
            "identity_data": data, "provider": provider, "last_sign_in_at": now,
            "created_at": now, "updated_at": now,
        }
        self._insert(cur, "identities", identity)
        identity["email"] = data.get("email", "").lower() if isinstance(data.get("email"), str) else None
        return identity

    def _update_identity_data(self, cur: Any, identity: dict[str, Any], updates: dict[str, Any]) -> None:
        """``Identity.UpdateIdentityData``: raw ``update identities set identity_data = ? where id = ?``
        (identities.updated_at untouched)."""
        data = dict(identity.get("identity_data") or {})
        for key, value in updates.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        identity["identity_data"] = data
        cur.execute(f"update {self._raw('identities')} set identity_data = %s where id = %s",
                    (json.dumps(data), identity["id"]))

    def _update_meta(self, cur: Any, user: dict[str, Any], column: str, updates: dict[str, Any]) -> None:
        """``User.UpdateUserMetaData`` / ``UpdateAppMetaData``: merge (None deletes a key), then UPDATE,
        even when nothing changed."""
        current = user.get(column)
        if current is None:
            user[column] = dict(updates)
        else:
            merged = dict(current)
            for key, value in updates.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            user[column] = merged
        self._update_only(cur, "users", user, column)

    def _update_providers(self, cur: Any, user: dict[str, Any]) -> None:
        """``User.UpdateAppMetaDataProviders``."""
        cur.execute(f"SELECT provider FROM {self._q('identities')} AS identities WHERE user_id = %s "
                    "ORDER BY created_at asc", (user["id"],))
        providers: list[str] = []
        for (provider,) in cur.fetchall():
            if provider not in providers:
                providers.append(provider)
        payload: dict[str, Any] = {"providers": providers}
        if providers:
            payload["provider"] = providers[0]
        self._update_meta(cur, user, "raw_app_meta_data", payload)

    def _remove_unconfirmed_identities(self, cur: Any, user: dict[str, Any], identity: dict[str, Any]) -> None:
        """``User.RemoveUnconfirmedIdentities``."""
        if identity["provider"] not in ("email", "phone"):
            user["encrypted_password"] = None
            self._update_only(cur, "users", user, "encrypted_password")
        user["raw_user_meta_data"] = dict(identity["identity_data"])
        self._update_meta(cur, user, "raw_user_meta_data", user["raw_user_meta_data"])
        for other in self._identities(cur, user["id"]):
            if other["id"] != identity["id"]:
                cur.execute(f"DELETE FROM {self._q('identities')} AS identities WHERE identities.id = %s",
                            (other["id"],))
        self._update_providers(cur, user)

    def _clear_one_time_tokens(self, cur: Any, user_id: str, token_type: str | None = None) -> None:
        """``models.ClearAllOneTimeTokensForUser`` / ``ClearOneTimeTokenForUser``."""
        if token_type is None:
            cur.execute(f"DELETE FROM {self._q('one_time_tokens')} AS one_time_tokens WHERE user_id = %s",
                        (user_id,))
        else:
            cur.execute(f"DELETE FROM {self._q('one_time_tokens')} AS one_time_tokens "
                        "WHERE token_type = %s and user_id = %s", (token_type, user_id))

    def _create_one_time_token(self, cur: Any, user_id: str, relates_to: str, token_hash: str,
                               token_type: str) -> None:
        """``models.CreateOneTimeToken``: DELETE the user's token of that type, then INSERT."""
        self._clear_one_time_tokens(cur, user_id, token_type)
        now = _now().replace(tzinfo=None)  # timestamp without time zone
        self._insert(cur, "one_time_tokens", {
            "id": str(uuid.uuid4()), "user_id": user_id, "token_type": token_type, "token_hash": token_hash,
            "relates_to": relates_to.lower(), "created_at": now, "updated_at": now,
        })

    def _confirm(self, cur: Any, user: dict[str, Any]) -> None:
        """``User.Confirm``: U confirmation_token, email_confirmed_at; U raw_user_meta_data
        (email_verified true); DELETE one_time_tokens."""
        user["confirmation_token"] = ""
        user["email_confirmed_at"] = _now()
        self._update_only(cur, "users", user, "confirmation_token", "email_confirmed_at")
        self._update_meta(cur, user, "raw_user_meta_data", {"email_verified": True})
        self._clear_one_time_tokens(cur, user["id"])

    def _confirm_phone(self, cur: Any, user: dict[str, Any]) -> None:
        """``User.ConfirmPhone``."""
        user["confirmation_token"] = ""
        user["phone_confirmed_at"] = _now()
        self._update_only(cur, "users", user, "confirmation_token", "phone_confirmed_at")
        self._clear_one_time_tokens(cur, user["id"])

    def _confirm_email_change(self, cur: Any, user: dict[str, Any], status: int = 0) -> None:
        """``User.ConfirmEmailChange``: U email (from email_change) and the change columns; DELETE
        one_time_tokens; ``Confirm`` if unconfirmed; the email identity's identity_data."""
        email = user["email_change"]
        user.update(email=email or None, email_change="", email_change_token_current="",
                    email_change_token_new="", email_change_confirm_status=status)
        self._update_only(cur, "users", user, "email", "email_change", "email_change_token_current",
                          "email_change_token_new", "email_change_confirm_status")
        self._clear_one_time_tokens(cur, user["id"])
        if user["email_confirmed_at"] is None:
            self._confirm(cur, user)
        identity = self._identity(cur, user["id"], "email")
        if identity is not None and "email" in (identity["identity_data"] or {}):
            identity["identity_data"] = {**identity["identity_data"], "email": email}
            self._update_only(cur, "identities", identity, "identity_data")

    def _confirm_phone_change(self, cur: Any, user: dict[str, Any]) -> None:
        """``User.ConfirmPhoneChange``: one U sets phone and phone_confirmed_at together."""
        phone = user["phone_change"]
        user.update(phone=phone or None, phone_change="", phone_change_token="", phone_confirmed_at=_now())
        self._update_only(cur, "users", user, "phone", "phone_change", "phone_change_token", "phone_confirmed_at")
        self._clear_one_time_tokens(cur, user["id"])
        identity = self._identity(cur, user["id"], "phone")
        if identity is not None:
            if "phone" in (identity["identity_data"] or {}):
                identity["identity_data"] = {**identity["identity_data"], "phone": phone}
            self._update_only(cur, "identities", identity, "identity_data")

    def _send_confirmation(self, cur: Any, user: dict[str, Any]) -> None:
        """``api.sendConfirmation``: U confirmation_token, confirmation_sent_at; the one-time token."""
        user["confirmation_token"] = _token_hash(user["email"] or "")
        user["confirmation_sent_at"] = _now()
        self._update_only(cur, "users", user, "confirmation_token", "confirmation_sent_at")
        self._create_one_time_token(cur, user["id"], user["email"] or "", user["confirmation_token"],
                                    "confirmation_token")

    def _send_phone_confirmation(self, cur: Any, user: dict[str, Any], phone: str, change: bool) -> None:
        """``api.sendPhoneConfirmation`` (``phoneConfirmationOtp`` or ``phoneChangeVerification``)."""
        if change:
            user.update(phone_change=phone, phone_change_token=_token_hash(phone), phone_change_sent_at=_now())
            self._update_only(cur, "users", user, "phone_change", "phone_change_token", "phone_change_sent_at")
            self._create_one_time_token(cur, user["id"], phone, user["phone_change_token"], "phone_change_token")
        else:
            user.update(confirmation_token=_token_hash(phone), confirmation_sent_at=_now())
            self._update_only(cur, "users", user, "confirmation_token", "confirmation_sent_at")
            self._create_one_time_token(cur, user["id"], phone, user["confirmation_token"], "confirmation_token")

    def _send_email_change(self, cur: Any, user: dict[str, Any], email: str, secure: bool = True) -> None:
        """``api.sendEmailChange``: the new address waits in email_change."""
        user["email_change"] = email
        user["email_change_token_new"] = _token_hash(email)
        if secure and user["email"]:
            user["email_change_token_current"] = _token_hash(user["email"])
        user["email_change_confirm_status"] = 0
        user["email_change_sent_at"] = _now()
        self._update_only(cur, "users", user, "email_change_token_current", "email_change_token_new",
                          "email_change", "email_change_sent_at", "email_change_confirm_status")
        if user["email_change_token_current"]:
            self._create_one_time_token(cur, user["id"], user["email"] or "", user["email_change_token_current"],
                                        "email_change_token_current")
        if user["email_change_token_new"]:
            self._create_one_time_token(cur, user["id"], email, user["email_change_token_new"],
                                        "email_change_token_new")

    def _clear_all_pending_tokens(self, cur: Any, user: dict[str, Any]) -> None:
        """``User.ClearAllPendingTokens``: one U of 14 columns, then DELETE one_time_tokens."""
        user.update(confirmation_token="", confirmation_sent_at=None, recovery_token="", recovery_sent_at=None,
                    email_change="", email_change_token_current="", email_change_token_new="",
                    email_change_sent_at=None, email_change_confirm_status=0, phone_change="",
                    phone_change_token="", phone_change_sent_at=None, reauthentication_token="",
                    reauthentication_sent_at=None)
        self._update_only(cur, "users", user, "confirmation_token", "confirmation_sent_at", "recovery_token",
                          "recovery_sent_at", "email_change", "email_change_token_current",
                          "email_change_token_new", "email_change_sent_at", "email_change_confirm_status",
                          "phone_change", "phone_change_token", "phone_change_sent_at", "reauthentication_token",
                          "reauthentication_sent_at")
        self._clear_one_time_tokens(cur, user["id"])

    def _update_user_email_from_identities(self, cur: Any, user: dict[str, Any], autoconfirm: bool) -> None:
        """``User.UpdateUserEmailFromIdentities`` (as of v2.196.0): U email; ``ClearAllPendingTokens``;
        and, if the promoted email is empty or neither IdP-verified nor autoconfirmed,
        U email_confirmed_at = NULL, then U raw_user_meta_data (email_verified false)."""
        identities = self._identities(cur, user["id"])
        current = user["email"] or ""
        if any((i["email"] or "") == current for i in identities):
            return

        def rank(i: dict[str, Any]) -> int:
            if not i["email"]:
                return 2
            return 0 if (i["identity_data"] or {}).get("email_verified") is True else 1

        identities.sort(key=lambda i: (rank(i), i["created_at"], i["id"]))
        primary = None
        for identity in identities:
            cur.execute(f"SELECT 1 FROM {self._q('users')} AS users WHERE instance_id = %s and LOWER(email) = %s "
                        "and aud = %s and is_sso_user = false LIMIT 1",
                        (NIL_UUID, (identity["email"] or "").lower(), user["aud"]))
            if cur.fetchone() is None:
                primary = identity
                break
        if primary is None:
            raise AuthServiceError("Unable to unlink identity due to email conflict", status=422,
                                   code="email_conflict_identity_not_deletable")
        user["email"] = primary["email"] or None
        self._update_only(cur, "users", user, "email")  # User.SetEmail
        self._clear_all_pending_tokens(cur, user)
        verified = (primary["identity_data"] or {}).get("email_verified") is True
        if not primary["email"] or (not verified and not autoconfirm):
            user["email_confirmed_at"] = None
            self._update_only(cur, "users", user, "email_confirmed_at")
            self._update_meta(cur, user, "raw_user_meta_data", {"email_verified": False})

    def _audit(self, cur: Any, actor: dict[str, Any] | None, action: str, traits: dict[str, Any] | None = None,
               ip_address: str = "") -> None:
        """``models.NewAuditLogEntry``: INSERT audit_log_entries (id, payload, created_at, ip_address,
        instance_id). ``actor`` None is the admin (service_role key)."""
        log_types = {"login": "account", "logout": "account", "user_signedup": "team", "user_deleted": "team",
                     "user_invited": "team", "token_revoked": "token", "token_refreshed": "token"}
        if actor is None:
            payload: dict[str, Any] = {"actor_id": NIL_UUID, "actor_via_sso": False,
                                       "actor_username": "service_role"}
        else:
            payload = {"actor_id": actor["id"], "actor_via_sso": bool(actor["is_sso_user"]),
                       "actor_username": actor["phone"] or actor["email"] or ""}
            name = (actor.get("raw_user_meta_data") or {}).get("full_name")
            if name is not None:
                payload["actor_name"] = name
        payload["action"] = action
        payload["log_type"] = log_types.get(action, "user")
        if traits is not None:
            payload["traits"] = traits
        self._insert(cur, "audit_log_entries", {
            "id": str(uuid.uuid4()), "payload": payload, "created_at": _now(), "ip_address": ip_address,
            "instance_id": NIL_UUID,
        })

    def _create_refresh_token(self, cur: Any, user: dict[str, Any], old: dict[str, Any] | None = None) -> Session:
        """``models.createRefreshToken``: [INSERT sessions], INSERT refresh_tokens ... returning id,
        ``UpdateLastSignInAt`` (U last_sign_in_at, updated_at)."""
        now = _now()
        if old is not None and old.get("session_id"):
            session_id = str(old["session_id"])
        else:
            session_id = str(uuid.uuid4())
            self._insert(cur, "sessions", {  # models.NewSession + ApplyGrantParams
                "id": session_id, "user_id": user["id"], "not_after": None, "created_at": now, "updated_at": now,
                "factor_id": None, "aal": "aal1", "refreshed_at": None, "user_agent": self.user_agent,
                "ip": self.ip, "tag": None, "oauth_client_id": None, "scopes": None,
                "refresh_token_hmac_key": None, "refresh_token_counter": None,
            })
        token = _secure_alphanumeric(12)
        self._insert(cur, "refresh_tokens", {
            "token": token, "user_id": user["id"], "parent": old["token"] if old else None,
            "session_id": session_id, "revoked": False, "created_at": now, "updated_at": now,
            "instance_id": NIL_UUID,
        }, returning="id")
        self._update_only(cur, "users", user, "last_sign_in_at")
        return Session(uuid.UUID(session_id), uuid.UUID(user["id"]), token)

    def _issue_refresh_token(self, cur: Any, user: dict[str, Any], method: str) -> Session:
        """``tokens.Service.IssueRefreshToken`` (algorithm v1): last_sign_in_at = now in memory,
        ``GrantAuthenticatedUser``, then ``AddClaimToSession`` (INSERT mfa_amr_claims ... ON CONFLICT)."""
        user["last_sign_in_at"] = _now()
        session = self._create_refresh_token(cur, user)
        now = _now()
        cur.execute(
            f"INSERT INTO {self._raw('mfa_amr_claims')}"
            "(id, session_id, created_at, updated_at, authentication_method) values (%s, %s, %s, %s, %s)"
            " ON CONFLICT ON CONSTRAINT mfa_amr_claims_session_id_authentication_method_pkey"
            " DO UPDATE SET updated_at = %s;",
            (str(uuid.uuid4()), str(session.id), now, now, method, now))
        self.last_session = session
        return session

    # -- signups -------------------------------------------------------------------------------
    def signup(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        anonymous: bool = False,
        sso: bool = False,
        confirmed: bool = False,
        user_meta: Any = None,
        user_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Sign a user up; returns the new id. Raises what the database raised.

        ``anonymous``: ``signup_anonymous``; ``sso``: ``signup_sso`` (SAML marks the email verified,
        so it is confirmed whatever ``confirmed`` says); ``phone``: ``signup_phone``; else
        ``signup_email``. ``confirmed`` is autoconfirm: the confirmation runs in the signup's
        transaction.
        """
        if anonymous:
            return self.signup_anonymous(user_meta=user_meta, user_id=user_id)
        if sso:
            return self.signup_sso(email or "", user_meta=user_meta, user_id=user_id)
        if phone:
            return self.signup_phone(phone, autoconfirm=confirmed, user_meta=user_meta, user_id=user_id)
        return self.signup_email(email or "", autoconfirm=confirmed, user_meta=user_meta, user_id=user_id)

    def signup_email(self, email: str, *, password: str = "password", autoconfirm: bool = False,
                     user_meta: Any = None, user_id: uuid.UUID | None = None, session: bool = True) -> uuid.UUID:
        """``POST /signup`` with an email (``api.Signup``, ``signupNewUser``).

        One transaction: INSERT users; U role; INSERT identities (email); U raw_user_meta_data;
        U raw_app_meta_data; then with autoconfirm INSERT audit (user_signedup) and ``Confirm``,
        without it INSERT audit (user_confirmation_requested) and ``sendConfirmation``. With
        autoconfirm a second transaction signs the user in (audit login, ``IssueRefreshToken``),
        unless ``session`` is False.
        """
        return self._signup_password("email", email, password, autoconfirm, user_meta, user_id, session)

    def signup_phone(self, phone: str, *, password: str = "password", autoconfirm: bool = False,
                     user_meta: Any = None, user_id: uuid.UUID | None = None, session: bool = True) -> uuid.UUID:
        """``POST /signup`` with a phone (``api.Signup``): as ``signup_email`` with ``ConfirmPhone``
        (``SMS_AUTOCONFIRM``) or ``sendPhoneConfirmation``."""
        return self._signup_password("phone", phone, password, autoconfirm, user_meta, user_id, session)

    def _signup_password(self, provider: str, address: str, password: str, autoconfirm: bool,
                         user_meta: Any, user_id: uuid.UUID | None, session: bool) -> uuid.UUID:
        email, phone = (address, "") if provider == "email" else ("", address)
        new = self._new_user(email, phone, BCRYPT_HASH if password else "", user_meta, user_id)
        new["raw_app_meta_data"] = {"provider": provider, "providers": [provider]}  # SignupParams.ToUserModel
        with self._tx() as cur:
            user = self._signup_new_user(cur, new)
            identity_data: dict[str, Any] = {"sub": user["id"], "email_verified": False, "phone_verified": False}
            if user["email"]:
                identity_data["email"] = user["email"]
            for key, value in (user_meta or {}).items():
                identity_data.setdefault(key, value)
            identity = self._create_identity(cur, user, provider, identity_data)
            self._remove_unconfirmed_identities(cur, user, identity)
            if autoconfirm:
                self._audit(cur, user, "user_signedup", {"provider": provider})
                if provider == "email":
                    self._confirm(cur, user)
                else:
                    self._confirm_phone(cur, user)
            else:
                self._audit(cur, user, "user_confirmation_requested", {"provider": provider})
                if provider == "email":
                    self._send_confirmation(cur, user)
                else:
                    self._send_phone_confirmation(cur, user, phone, change=False)
        if autoconfirm and session:
            with self._tx() as cur:
                self._audit(cur, user, "login", {"provider": provider})
                self._issue_refresh_token(cur, user, "password")
        return uuid.UUID(user["id"])

    def signup_anonymous(self, *, user_meta: Any = None, user_id: uuid.UUID | None = None) -> uuid.UUID:
        """``POST /signup`` without email or phone (``api.SignupAnonymously``), one transaction:
        INSERT users (is_anonymous, email and phone NULL, raw_app_meta_data {}); U role;
        ``IssueRefreshToken``. No identity and no audit row."""
        new = self._new_user("", "", "", user_meta, user_id)
        new["is_anonymous"] = True
        new["raw_app_meta_data"] = {}
        with self._tx() as cur:
            user = self._signup_new_user(cur, new)
            self._issue_refresh_token(cur, user, "anonymous")
        return uuid.UUID(user["id"])

    def signup_external(self, provider: str, email: str, *, email_verified: bool = True,
                        autoconfirm: bool = False, user_meta: Any = None, user_id: uuid.UUID | None = None,
                        sub: str | None = None) -> uuid.UUID:
        """A new account from an OAuth/OIDC or SAML identity (``api.createAccountFromExternalIdentity``,
        CreateAccount), then ``IssueRefreshToken``, all in one transaction.

        INSERT users (is_sso_user for ``sso:<uuid>`` providers, whose linking domain is not
        "default"); U role; INSERT identities; ``RemoveUnconfirmedIdentities`` (U
        encrypted_password NULL, U raw_user_meta_data, U raw_app_meta_data); if the IdP
        verified the email (or autoconfirm) INSERT audit (user_signedup) and ``Confirm``;
        otherwise ``sendConfirmation`` and the transaction commits with an error (422,
        ``AuthServiceError(committed=True)``).
        """
        claims: dict[str, Any] = {"sub": sub or uuid.uuid4().hex, "email": email, "email_verified": email_verified,
                                  "phone_verified": False}
        claims.update(user_meta or {})
        new = self._new_user(email, "", "", claims, user_id)
        new["is_sso_user"] = provider.startswith("sso:")
        new["raw_app_meta_data"] = {"provider": provider, "providers": [provider]}
        with self._tx() as cur:
            user = self._signup_new_user(cur, new)
            identity = self._create_identity(cur, user, provider, claims)
            self._remove_unconfirmed_identities(cur, user, identity)
            if email_verified or autoconfirm:
                self._audit(cur, user, "user_signedup", {"provider": provider})
                self._confirm(cur, user)
            else:
                self._send_confirmation(cur, user)
                raise _CommitWithError(AuthServiceError(
                    f"Unverified email with {provider}. A confirmation email has been sent to your {provider} email",
                    status=422, code="provider_email_needs_verification", committed=True))
            self._issue_refresh_token(cur, user, "sso/saml" if provider.startswith("sso:") else "oauth")
        return uuid.UUID(user["id"])

    def signup_sso(self, email: str, *, provider_id: uuid.UUID | None = None, user_meta: Any = None,
                   user_id: uuid.UUID | None = None) -> uuid.UUID:
        """A SAML SSO signup (``api.samlCallback`` → ``createAccountFromExternalIdentity``): provider
        ``sso:<uuid>``, is_sso_user true, the email always verified (samlacs.go)."""
        provider = f"sso:{provider_id or uuid.uuid4()}"
        return self.signup_external(provider, email, email_verified=True, user_meta=user_meta, user_id=user_id)

    def admin_create_user(self, *, email: str | None = None, phone: str | None = None,
                          password: str | None = None, email_confirm: bool = False, phone_confirm: bool = False,
                          role: str | None = None, user_meta: Any = None, app_meta: dict[str, Any] | None = None,
                          user_id: uuid.UUID | None = None) -> uuid.UUID:
        """``POST /admin/users`` (``api.adminUserCreate``), one transaction: INSERT users; INSERT
        identities (email, [phone]); INSERT audit (user_signedup, actor the admin); then U role;
        [U raw_app_meta_data]; [``Confirm``]; [``ConfirmPhone``]. No session."""
        provider = "email" if email else "phone"
        new = self._new_user(email or "", phone or "", BCRYPT_HASH, user_meta, user_id)
        new["raw_app_meta_data"] = {"provider": provider, "providers": [provider]}
        with self._tx() as cur:
            self._insert(cur, "users", {c: new[c] for c in USER_COLUMNS})
            user = new
            if email:
                data = {"sub": user["id"], "email": user["email"], "email_verified": email_confirm,
                        "phone_verified": False}
                self._create_identity(cur, user, "email", data)
            if phone:
                data = {"sub": user["id"], "phone": phone, "email_verified": False, "phone_verified": phone_confirm}
                self._create_identity(cur, user, "phone", data)
            self._audit(cur, None, "user_signedup", {"user_id": user["id"], "user_email": user["email"] or "",
                                                     "user_phone": user["phone"] or ""})
            user["role"] = (role or DEFAULT_GROUP_NAME).strip()
            self._update_only(cur, "users", user, "role")
            if app_meta is not None:
                self._update_meta(cur, user, "raw_app_meta_data", app_meta)
            if email_confirm:
                self._confirm(cur, user)
            if phone_confirm:
                self._confirm_phone(cur, user)
        return uuid.UUID(user["id"])

    # -- confirmations and email changes ------------------------------------------------------
    def confirm_email(self, user_id: uuid.UUID) -> Session:
        """``/verify`` type signup (``api.verifyPost`` → ``signupVerify``), one transaction: INSERT
        audit (user_signedup); ``Confirm`` (3 statements); identity_data email_verified on the
        matching identities; U raw_app_meta_data (providers); ``IssueRefreshToken``."""
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            self._audit(cur, user, "user_signedup", {"provider": "email"})
            self._confirm(cur, user)
            for identity in self._identities(cur, user["id"]):
                if identity["email"] and user["email"] and identity["email"] == user["email"]:
                    self._update_identity_data(cur, identity, {"email_verified": True})
            self._update_providers(cur, user)
            user = self._load_user(cur, user_id)
            return self._issue_refresh_token(cur, user, "otp")

    def confirm_phone(self, user_id: uuid.UUID) -> Session:
        """``/verify`` type sms (``api.smsVerify``): INSERT audit (user_signedup); ``ConfirmPhone``;
        [U is_anonymous]; U raw_app_meta_data; ``IssueRefreshToken``; one transaction."""
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            self._audit(cur, user, "user_signedup", {"provider": "phone"})
            self._confirm_phone(cur, user)
            if user["is_anonymous"]:
                user["is_anonymous"] = False
                self._update_only(cur, "users", user, "is_anonymous")
            self._update_providers(cur, user)
            user = self._load_user(cur, user_id)
            return self._issue_refresh_token(cur, user, "otp")

    def request_email_change(self, user_id: uuid.UUID, new_email: str, *, autoconfirm: bool = False) -> None:
        """``PUT /user`` with an email (``api.UserUpdate``), one transaction.

        An anonymous user with autoconfirm goes straight through ``emailChangeVerify``;
        everyone else gets ``sendEmailChange`` (the address waits in email_change, U of 5
        columns, one-time tokens). Then INSERT audit (user_modified).
        """
        new_email = new_email.lower()
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            if new_email != (user["email"] or ""):
                if user["is_anonymous"] and autoconfirm:
                    user["email_change"] = new_email
                    self._email_change_verify_final(cur, user)
                else:
                    self._send_email_change(cur, user, new_email)
            self._audit(cur, user, "user_modified")

    def verify_email_change(self, user_id: uuid.UUID, *, which: str = "new") -> Session | None:
        """``/verify`` type email_change (``api.emailChangeVerify``).

        With secure email change and a current email, the first link (``which`` "current" or
        "new") only records it: U email_change_confirm_status = 1 and the used token, one
        transaction, returns None. The last link (or the only one, for a user without an
        email) runs, in one transaction: INSERT audit (user_modified); INSERT or update the
        email identity; [U is_anonymous = false]; ``ConfirmEmailChange``; U raw_app_meta_data;
        ``IssueRefreshToken``; returns the session.
        """
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            if user["email_change_confirm_status"] == 0 and user["email"]:
                user["email_change_confirm_status"] = 1
                if which == "current":
                    user["email_change_token_current"] = ""
                    self._clear_one_time_tokens(cur, user["id"], "email_change_token_current")
                else:
                    user["email_change_token_new"] = ""
                    self._clear_one_time_tokens(cur, user["id"], "email_change_token_new")
                self._update_only(cur, "users", user, "email_change_confirm_status", "email_change_token_current",
                                  "email_change_token_new")
                return None
            self._email_change_verify_final(cur, user)
            self._update_providers(cur, user)
            user = self._load_user(cur, user_id)
            return self._issue_refresh_token(cur, user, "otp")

    def _email_change_verify_final(self, cur: Any, user: dict[str, Any]) -> None:
        """The second half of ``api.emailChangeVerify``."""
        self._audit(cur, user, "user_modified")
        identity = self._identity(cur, user["id"], "email")
        if identity is None:
            self._create_identity(cur, user, "email", {"sub": user["id"], "email": user["email_change"],
                                                       "email_verified": True, "phone_verified": False})
        else:
            self._update_identity_data(cur, identity, {"email": user["email_change"], "email_verified": True})
        if user["is_anonymous"]:
            user["is_anonymous"] = False
            self._update_only(cur, "users", user, "is_anonymous")
        self._confirm_email_change(cur, user, 0)

    def change_email(self, user_id: uuid.UUID, new_email: str) -> None:
        """An email change as a user makes it: ``request_email_change`` (``PUT /user``), then the
        link(s) of ``verify_email_change`` until ``ConfirmEmailChange`` has run (two links under
        secure email change, one for a user without an email). Confirms an unconfirmed user."""
        self.request_email_change(user_id, new_email)
        for which in ("current", "new"):
            if self.verify_email_change(user_id, which=which) is not None:
                return

    def admin_update_user(self, user_id: uuid.UUID, *, email: str | None = None, email_confirm: bool = False,
                          phone: str | None = None, phone_confirm: bool = False, role: str | None = None,
                          user_meta: dict[str, Any] | None = None,
                          app_meta: dict[str, Any] | None = None) -> None:
        """``PUT /admin/users/{id}`` (``api.adminUserUpdate``), one transaction: [U role];
        [``Confirm``]; [``ConfirmPhone``]; for an email: INSERT or update the email identity,
        [U is_anonymous when confirming], U email (``SetEmail``, email_confirmed_at untouched);
        the same for a phone; [metadata]; INSERT audit (user_modified, actor the admin)."""
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            if role:
                user["role"] = role.strip()
                self._update_only(cur, "users", user, "role")
            if email_confirm:
                self._confirm(cur, user)
            if phone_confirm:
                self._confirm_phone(cur, user)
            if email:
                email = email.lower()
                identity = self._identity(cur, user["id"], "email")
                if identity is None:
                    self._create_identity(cur, user, "email", {"sub": user["id"], "email": email,
                                                               "email_verified": email_confirm,
                                                               "phone_verified": False})
                else:
                    self._update_identity_data(cur, identity, {"email": email, "email_verified": email_confirm})
                if user["is_anonymous"] and email_confirm:
                    user["is_anonymous"] = False
                    self._update_only(cur, "users", user, "is_anonymous")
                user["email"] = email
                self._update_only(cur, "users", user, "email")
            if phone:
                identity = self._identity(cur, user["id"], "phone")
                if identity is None:
                    self._create_identity(cur, user, "phone", {"sub": user["id"], "phone": phone,
                                                               "email_verified": False,
                                                               "phone_verified": phone_confirm})
                else:
                    self._update_identity_data(cur, identity, {"phone": phone, "phone_verified": phone_confirm})
                if user["is_anonymous"] and phone_confirm:
                    user["is_anonymous"] = False
                    self._update_only(cur, "users", user, "is_anonymous")
                user["phone"] = phone
                self._update_only(cur, "users", user, "phone")
            if app_meta is not None:
                self._update_meta(cur, user, "raw_app_meta_data", app_meta)
            if user_meta is not None:
                self._update_meta(cur, user, "raw_user_meta_data", user_meta)
            self._audit(cur, None, "user_modified", {"user_id": user["id"], "user_email": user["email"] or "",
                                                     "user_phone": user["phone"] or ""})

    def admin_change_email(self, user_id: uuid.UUID, new_email: str) -> None:
        """An admin changes the email without ``email_confirm`` (``adminUserUpdate``): U email only;
        email_confirmed_at keeps its value, so the new address counts as confirmed."""
        self.admin_update_user(user_id, email=new_email)

    # -- anonymous users becoming permanent ----------------------------------------------------
    def convert_anonymous(self, user_id: uuid.UUID, email: str, *, autoconfirm: bool = False) -> None:
        """An anonymous user adds an email (``PUT /user``, then ``/verify`` type email_change).

        Without autoconfirm (the default): ``sendEmailChange`` puts the address in
        email_change; the verification then runs U is_anonymous = false, U email (from
        email_change), U email_confirmed_at (``Confirm``), each a separate UPDATE, in one
        transaction. With autoconfirm all of it runs inside ``PUT /user``."""
        self.request_email_change(user_id, email, autoconfirm=autoconfirm)
        if not autoconfirm:
            self.verify_email_change(user_id)

    def convert_anonymous_phone(self, user_id: uuid.UUID, phone: str, *, autoconfirm: bool = False) -> None:
        """An anonymous user adds a phone (``PUT /user`` → ``smsVerify`` type phone_change): INSERT
        audit; INSERT identities (phone); ``ConfirmPhoneChange`` (one U sets phone and
        phone_confirmed_at); then U is_anonymous = false. Without autoconfirm the number waits
        in phone_change (``sendPhoneConfirmation``) until the OTP is verified."""
        if not autoconfirm:
            with self._tx() as cur:
                user = self._load_user(cur, user_id)
                self._send_phone_confirmation(cur, user, phone, change=True)
                self._audit(cur, user, "user_modified")
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            if autoconfirm:
                user["phone_change"] = phone
            self._audit(cur, user, "user_modified")
            identity = self._identity(cur, user["id"], "phone")
            if identity is None:
                self._create_identity(cur, user, "phone", {"sub": user["id"], "phone": user["phone_change"],
                                                           "email_verified": False, "phone_verified": True})
            else:
                self._update_identity_data(cur, identity, {"phone": user["phone_change"], "phone_verified": True})
            self._confirm_phone_change(cur, user)
            if user["is_anonymous"]:
                user["is_anonymous"] = False
                self._update_only(cur, "users", user, "is_anonymous")
            if autoconfirm:
                self._audit(cur, user, "user_modified")
            else:
                self._update_providers(cur, user)
                user = self._load_user(cur, user_id)
                self._issue_refresh_token(cur, user, "otp")

    def admin_convert_anonymous(self, user_id: uuid.UUID, email: str) -> None:
        """An admin makes an anonymous user permanent (``adminUserUpdate`` with email_confirm):
        ``Confirm`` first, then U is_anonymous = false, then U email."""
        self.admin_update_user(user_id, email=email, email_confirm=True)

    def link_identity(self, user_id: uuid.UUID, provider: str, *, email: str | None = None,
                      email_verified: bool = True, sub: str | None = None, autoconfirm: bool = False) -> None:
        """Manual identity linking (``api.linkIdentityToUser``), then ``IssueRefreshToken``, one
        transaction: INSERT identities; INSERT audit (identity_linked); for a user without an
        email ``UpdateUserEmailFromIdentities``, then ``Confirm`` and U is_anonymous = false (an
        unverified IdP email instead sends a confirmation and commits with an error);
        U raw_app_meta_data."""
        claims: dict[str, Any] = {"sub": sub or uuid.uuid4().hex, "email_verified": email_verified,
                                  "phone_verified": False}
        if email:
            claims["email"] = email
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            identity = self._create_identity(cur, user, provider, claims)
            self._audit(cur, user, "identity_linked", {"identity_id": identity["id"], "provider": provider,
                                                       "provider_id": identity["provider_id"]}, self.ip)
            if not user["email"]:
                self._update_user_email_from_identities(cur, user, autoconfirm)
                if not email_verified:
                    self._send_confirmation(cur, user)
                    raise _CommitWithError(AuthServiceError(
                        f"Unverified email with {provider}. A confirmation email has been sent to your "
                        f"{provider} email", status=422, code="email_not_confirmed", committed=True))
                self._confirm(cur, user)
                if user["is_anonymous"]:
                    user["is_anonymous"] = False
                    self._update_only(cur, "users", user, "is_anonymous")
            self._update_providers(cur, user)
            self._issue_refresh_token(cur, user, "oauth")

    def unlink_identity(self, user_id: uuid.UUID, provider: str, *, autoconfirm: bool = False) -> None:
        """``DELETE /user/identities/{id}`` (``api.DeleteIdentity``), one transaction: INSERT audit
        (identity_unlinked); DELETE identities; for phone U phone = NULL then U
        phone_confirmed_at = NULL, otherwise ``UpdateUserEmailFromIdentities`` (which can set
        email_confirmed_at back to NULL); U raw_app_meta_data."""
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            identities = self._identities(cur, user["id"])
            if len(identities) <= 1:
                raise AuthServiceError("User must have at least 1 identity after unlinking", status=422,
                                       code="single_identity_not_deletable")
            doomed = next((i for i in identities if i["provider"] == provider), None)
            if doomed is None:
                raise AuthServiceError("Identity doesn't exist", status=422, code="identity_not_found")
            self._audit(cur, user, "identity_unlinked", {"identity_id": doomed["id"], "provider": provider,
                                                         "provider_id": doomed["provider_id"]}, self.ip)
            cur.execute(f"DELETE FROM {self._q('identities')} AS identities WHERE identities.id = %s",
                        (doomed["id"],))
            if provider == "phone":
                user["phone_confirmed_at"] = None
                user["phone"] = None
                self._update_only(cur, "users", user, "phone")
                self._update_only(cur, "users", user, "phone_confirmed_at")
            else:
                self._update_user_email_from_identities(cur, user, autoconfirm)
            self._update_providers(cur, user)

    # -- sessions ------------------------------------------------------------------------------
    def sign_in(self, user_id: uuid.UUID) -> Session:
        """``POST /token?grant_type=password`` (``api.ResourceOwnerPasswordGrant``), one transaction:
        INSERT audit (login); INSERT sessions; INSERT refresh_tokens; U last_sign_in_at,
        updated_at; INSERT mfa_amr_claims."""
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            self._audit(cur, user, "login", {"provider": "email"})
            return self._issue_refresh_token(cur, user, "password")

    def refresh(self, refresh_token: str | Session) -> Session:
        """``POST /token?grant_type=refresh_token`` with a legacy token (``tokens.Service.RefreshTokenGrant``).

        Reads outside the transaction; then one transaction that locks the token and the
        session (``FOR UPDATE SKIP LOCKED``; when that finds nothing it is retried every 10-30 ms
        for up to 5 s); INSERT audit (token_refreshed); ``GrantRefreshTokenSwap`` (INSERT audit
        token_revoked, U refresh_tokens revoked, INSERT refresh_tokens with parent, U users
        last_sign_in_at (unchanged) and updated_at); U sessions refreshed_at, user_agent, ip.
        A revoked token reused outside the reuse interval revokes the session's tokens and
        commits with an error.
        """
        token = refresh_token.refresh_token if isinstance(refresh_token, Session) else refresh_token
        deadline = time.monotonic() + REFRESH_RETRY_S
        while True:
            with self.conn.cursor() as cur:
                cur.execute(f"SELECT * FROM {self._q('refresh_tokens')} AS refresh_tokens WHERE token = %s LIMIT 1",
                            (token,))
                found = cur.fetchone()
            self.conn.commit()
            if found is None:
                raise AuthServiceError("Invalid Refresh Token: Refresh Token Not Found", code="refresh_token_not_found")
            result = self._refresh_once(token)
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                raise AuthServiceError("Too many concurrent token refresh requests on the same session or refresh "
                                       "token", status=409, code="conflict")
            time.sleep(0.01 + secrets.randbelow(20) / 1000)

    def _refresh_once(self, token: str) -> Session | None:
        with self._tx() as cur:
            cur.execute(f"SELECT * FROM {self._q('refresh_tokens')} WHERE token = %s LIMIT 1 FOR UPDATE SKIP LOCKED;",
                        (token,))
            if cur.fetchone() is None:
                return None  # locked by a concurrent refresh: retry
            cur.execute(f"SELECT * FROM {self._q('refresh_tokens')} AS refresh_tokens WHERE token = %s LIMIT 1",
                        (token,))
            old = _dicts(cur)[0]
            user = self._load_user(cur, old["user_id"])
            cur.execute(f"SELECT * FROM {self._q('sessions')} WHERE id = %s LIMIT 1 FOR UPDATE SKIP LOCKED;",
                        (str(old["session_id"]),))
            rows = _dicts(cur)
            if not rows:
                return None  # the session is locked by a concurrent refresh: retry
            session = rows[0]
            session["id"] = str(session["id"])
            issued: str | None = None
            if old["revoked"]:
                cur.execute(f"SELECT * FROM {self._q('refresh_tokens')} AS refresh_tokens "
                            "WHERE session_id = %s AND revoked is false ORDER BY id DESC LIMIT 1",
                            (session["id"],))
                active = _dicts(cur)
                active_row = active[0] if active else None
                if active_row is not None and active_row["parent"] == old["token"]:
                    issued = active_row["token"]
                elif _now() > old["updated_at"] + timedelta(seconds=REFRESH_TOKEN_REUSE_INTERVAL_S):
                    cur.execute(f"update {self._raw('refresh_tokens')} set revoked = true, updated_at = now() "
                                "where session_id = %s and revoked = false", (session["id"],))
                    raise _CommitWithError(AuthServiceError("Invalid Refresh Token: Already Used",
                                                            code="refresh_token_already_used", committed=True))
            self._audit(cur, user, "token_refreshed")
            if issued is None:
                self._audit(cur, user, "token_revoked")  # GrantRefreshTokenSwap
                old["revoked"] = True
                self._update_only(cur, "refresh_tokens", old, "revoked")
                issued = self._create_refresh_token(cur, user, old).refresh_token
            session.update(refreshed_at=_now().replace(tzinfo=None), user_agent=self.user_agent, ip=self.ip)
            self._update_only(cur, "sessions", session, "refreshed_at", "user_agent", "ip")
            result = Session(uuid.UUID(session["id"]), uuid.UUID(user["id"]), issued)
            self.last_session = result
            return result

    def logout(self, session: Session) -> None:
        """``POST /logout`` scope local (``api.Logout``): INSERT audit (logout); DELETE the session
        (its refresh tokens and AMR claims go by ON DELETE CASCADE)."""
        with self._tx() as cur:
            user = self._load_user(cur, session.user_id)
            self._audit(cur, user, "logout")
            cur.execute(f"DELETE FROM {self._raw('sessions')} WHERE id = %s", (str(session.id),))

    # -- deletes -------------------------------------------------------------------------------
    def soft_delete(self, user_id: uuid.UUID) -> None:
        """``DELETE /admin/users/{id}`` with should_soft_delete (``api.adminUserDelete`` →
        ``SoftDeleteUser``, ``SoftDeleteUserIdentities``), one transaction.

        INSERT audit (user_deleted); then, unless already deleted, one U that sets email =
        base64url(sha256(id || email)) (43 characters, also for a NULL email), phone = its
        first 15 characters over id || phone, email_change and phone_change likewise,
        encrypted_password NULL, the tokens '' and deleted_at; DELETE one_time_tokens;
        U raw_user_meta_data = {}; U raw_app_meta_data = {}; DELETE sessions; each identity's
        identity_data {} and provider_id hashed; DELETE sessions again.
        """
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            self._audit(cur, None, "user_deleted", {"user_id": user["id"], "user_email": user["email"] or "",
                                                    "user_phone": user["phone"] or ""})
            if user["deleted_at"] is not None:
                return
            uid = user["id"]
            user.update(
                email=obfuscate_email(uid, user["email"] or ""), phone=obfuscate_phone(uid, user["phone"] or ""),
                email_change=obfuscate_email(uid, user["email_change"] or ""),
                phone_change=obfuscate_phone(uid, user["phone_change"] or ""), encrypted_password=None,
                confirmation_token="", recovery_token="", email_change_token_current="",
                email_change_token_new="", phone_change_token="", deleted_at=_now(),
            )
            self._update_only(cur, "users", user, "email", "phone", "encrypted_password", "email_change",
                              "phone_change", "confirmation_token", "recovery_token", "email_change_token_current",
                              "email_change_token_new", "phone_change_token", "deleted_at")
            self._clear_one_time_tokens(cur, uid)
            self._update_meta(cur, user, "raw_user_meta_data", dict.fromkeys(user["raw_user_meta_data"] or {}))
            self._update_meta(cur, user, "raw_app_meta_data", dict.fromkeys(user["raw_app_meta_data"] or {}))
            cur.execute(f"DELETE FROM {self._raw('sessions')} WHERE user_id = %s", (uid,))  # models.Logout
            for identity in self._identities(cur, uid):
                self._update_identity_data(cur, identity, dict.fromkeys(identity["identity_data"] or {}))
                cur.execute(f"update {self._raw('identities')} set provider_id = %s where id = %s",
                            (obfuscate_value(uid, f"{identity['provider']}:{identity['provider_id']}"),
                             identity["id"]))
            # DELETE FROM mfa_factors / webauthn_credentials WHERE user_id: tables not in this fixture
            cur.execute(f"DELETE FROM {self._raw('sessions')} WHERE user_id = %s", (uid,))

    def hard_delete(self, user_id: uuid.UUID) -> None:
        """``DELETE /admin/users/{id}`` (``api.adminUserDelete``, the default), one transaction: INSERT
        audit (user_deleted), then ``DELETE FROM "users" AS users WHERE users.id = $1``; identities,
        sessions, refresh tokens (through sessions), AMR claims and one-time tokens go by
        ON DELETE CASCADE."""
        with self._tx() as cur:
            user = self._load_user(cur, user_id)
            self._audit(cur, None, "user_deleted", {"user_id": user["id"], "user_email": user["email"] or "",
                                                    "user_phone": user["phone"] or ""})
            cur.execute(f"DELETE FROM {self._q('users')} AS users WHERE users.id = %s", (user["id"],))

    def cleanup_anonymous_users(self, older_than: str | timedelta = "30 days") -> int:
        """The anonymous-user statement of ``models.Cleanup`` (internal/models/cleanup.go): ONE DELETE,
        in its own transaction, of up to 100 anonymous users created before ``older_than``
        (an interval, default GoTrue's '30 days'); returns how many it deleted."""
        interval = f"{older_than.total_seconds()} seconds" if isinstance(older_than, timedelta) else older_than
        users = self._q("users")
        with self._tx() as cur:
            cur.execute(f"delete from {users} where id in (select id from {users} where created_at < now() - "
                        "interval %s and is_anonymous is true limit 100 for update skip locked);", (interval,))
            return int(cur.rowcount)
