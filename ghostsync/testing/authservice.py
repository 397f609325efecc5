"""Writes to ``auth.users`` made the way Supabase's auth service (GoTrue) makes them.

Every write connects as ``supabase_auth_admin`` and names the table without a
schema, relying on that role's ``search_path = auth`` as the auth service
does. A signup is one transaction: INSERT of the new row, then an UPDATE of
the same row that sets ``role``. Any error raised by a trigger rolls the whole
signup back, which the auth service reports as "Database error saving new
user".
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import psycopg2

AUTH_ROLE = "supabase_auth_admin"

SIGNUP_INSERT = """
INSERT INTO {table} (
  instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
  phone, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data,
  is_sso_user, is_anonymous, confirmation_token, confirmation_sent_at,
  created_at, updated_at
) VALUES (
  '00000000-0000-0000-0000-000000000000', %(id)s, 'authenticated', '', %(email)s,
  %(password)s, %(email_confirmed_at)s, %(phone)s, NULL, %(app_meta)s, %(user_meta)s,
  %(sso)s, %(anonymous)s, '', now(), now(), now()
)
"""
SIGNUP_UPDATE = "UPDATE {table} SET role = 'authenticated', updated_at = now() WHERE id = %(id)s"


class AuthService:
    """A client of one database that behaves like the auth service."""

    def __init__(self, dsn: str, *, table: str = "users", options: str | None = None) -> None:
        """``table`` is the name written (unqualified by default, as the auth service does);
        ``options`` are libpq options, e.g. ``-c search_path=...``."""
        self.dsn = dsn
        self.table = table
        self.conn = psycopg2.connect(dsn, options=options) if options else psycopg2.connect(dsn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> AuthService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self, *statements: tuple[str, dict[str, Any]]) -> None:
        try:
            with self.conn.cursor() as cur:
                for sql, params in statements:
                    cur.execute(sql.replace("{table}", self.table), params)
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            raise

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
        """Sign a user up; returns the new id. Raises what the database raised."""
        new_id = user_id or uuid.uuid4()
        provider = "sso" if sso else ("phone" if phone else ("anonymous" if anonymous else "email"))
        params = {
            "id": str(new_id),
            "email": email,
            "password": None if anonymous or sso else "$2a$10$" + "x" * 53,
            "email_confirmed_at": datetime.now(timezone.utc) if confirmed else None,
            "phone": phone,
            "app_meta": json.dumps({"provider": provider, "providers": [provider]}),
            "user_meta": json.dumps(user_meta if user_meta is not None else {}),
            "sso": sso,
            "anonymous": anonymous,
        }
        self._transaction((SIGNUP_INSERT, params), (SIGNUP_UPDATE, {"id": str(new_id)}))
        return new_id

    def confirm_email(self, user_id: uuid.UUID) -> None:
        self._transaction((
            "UPDATE {table} SET email_confirmed_at = now(), confirmation_token = '', updated_at = now()"
            " WHERE id = %(id)s",
            {"id": str(user_id)},
        ))

    def change_email(self, user_id: uuid.UUID, new_email: str) -> None:
        self._transaction((
            "UPDATE {table} SET email = %(email)s, email_change = '', email_change_token_new = '',"
            " email_change_confirm_status = 0, updated_at = now() WHERE id = %(id)s",
            {"id": str(user_id), "email": new_email},
        ))

    def sign_in(self, user_id: uuid.UUID) -> None:
        self._transaction((
            "UPDATE {table} SET last_sign_in_at = now(), updated_at = now() WHERE id = %(id)s",
            {"id": str(user_id)},
        ))

    def convert_anonymous(self, user_id: uuid.UUID, email: str) -> None:
        self._transaction((
            "UPDATE {table} SET is_anonymous = false, email = %(email)s, email_confirmed_at = now(),"
            " updated_at = now() WHERE id = %(id)s",
            {"id": str(user_id), "email": email},
        ))

    def soft_delete(self, user_id: uuid.UUID) -> None:
        obfuscated = f"{uuid.uuid4().hex}@deleted.invalid"
        self._transaction((
            "UPDATE {table} SET email = %(email)s, phone = NULL, raw_user_meta_data = '{}',"
            " raw_app_meta_data = '{}', deleted_at = now(), updated_at = now() WHERE id = %(id)s",
            {"id": str(user_id), "email": obfuscated},
        ))

    def hard_delete(self, user_id: uuid.UUID) -> None:
        self._transaction(("DELETE FROM {table} WHERE id = %(id)s", {"id": str(user_id)}))
