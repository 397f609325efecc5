"""What happens to a profile when its account is hard-deleted: the profile table's key on ``id`` decides.

The rule ``ghostsync_0011`` keeps in SQL (``ghostsync.handle_users_deleted()``),
read here for ``status`` and ``repair``:

- public.users ghostsync created: ghostsync deletes the profiles of the
  accounts a DELETE removed; one it cannot delete (an app table's key to it
  refuses) stays as an orphan, recorded in ghostsync.sync_failures, for
  ``repair`` to retry;
- an adopted public.users whose key on ``id`` to ``auth.users(id)``
  cascades: the key deletes the profile;
- one whose key on ``id`` does not cascade: the key refuses the delete
  while the profile exists, as it does without ghostsync (the app's rule;
  reported as ``findings.APP_KEY_REFUSES_DELETES``, a warning);
- one without a key on ``id``: the profile outlives its account as the app's
  row (the app keeps its users' rows, e.g. with its own ``deleted`` flag):
  reported as ``findings.APP_ROWS_KEPT`` (a warning), never as orphans, and
  ``repair`` leaves it.

Only the key on ``id`` counts: another column's key to auth.users (an app's
``referred_by ... ON DELETE SET NULL``) says nothing about the profile.
Revisions before ghostsync_0011 removed the profile themselves; there
``applies`` is false and profiles without an account are orphans as before.
``key_on_id_sql`` is the one reading of the key: ``status`` runs it with the
register read from ``ghostsync.objects``, ``verify-sql`` embeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ghostsync.chain import Declared

DELETE_SYNC = "ghostsync.handle_users_deleted()"
# The revision whose statement delete sync removed every deleted account's profile itself (and whose
# BEFORE DELETE row trigger removed it even before a key that does not cascade could refuse the delete).
REMOVED_EVERY_PROFILE = ("ghostsync_0008",)

ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

KEY_ON_ID = (
    "SELECT {created} AS created,"
    " c.conname::text AS conname, c.confdeltype::text AS action"
    " FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_constraint AS c"
    "   ON c.conrelid = pg_catalog.to_regclass('public.users') AND c.contype = 'f'"
    "  AND c.confrelid = pg_catalog.to_regclass('auth.users')"
    "  AND c.conkey = ARRAY[(SELECT a.attnum FROM pg_catalog.pg_attribute AS a"
    "                        WHERE a.attrelid = c.conrelid AND a.attname = 'id')]"
    "  AND c.confkey = ARRAY[(SELECT a.attnum FROM pg_catalog.pg_attribute AS a"
    "                         WHERE a.attrelid = c.confrelid AND a.attname = 'id')]"
    " ORDER BY c.confdeltype <> 'c', c.conname LIMIT 1"
)
# status's reading of the register: whether ghostsync created public.users
CREATED = ("coalesce((SELECT o.created FROM ghostsync.objects AS o WHERE o.kind = 'table' "
           "AND o.name = 'public.users'), false)")


def key_on_id_sql(created: str) -> str:
    """One row (created, conname, action): ``created`` an SQL boolean, whether ghostsync created the table."""
    return KEY_ON_ID.format(created=created)


@dataclass(frozen=True)
class ProfileKey:
    """Who owns public.users, and its foreign key on ``id`` to auth.users(id) (``name`` None: none)."""

    created: bool
    name: str | None
    on_delete: str | None

    @property
    def keeps_app_rows(self) -> bool:
        """An adopted table without a key on id: a profile outlives its account as the app's row."""
        return not self.created and self.name is None

    @property
    def refuses_deletes(self) -> bool:
        """A key on id that does not cascade: a hard delete is refused while the profile exists."""
        return self.name is not None and self.on_delete != "CASCADE"


def applies(declared: Declared) -> bool:
    """Whether the revision ``declared`` describes keeps these rules (ghostsync_0011 and later)."""
    return DELETE_SYNC in declared.functions and declared.declared_by.get(DELETE_SYNC) not in REMOVED_EVERY_PROFILE


def read(conn: Connection) -> ProfileKey:
    created, name, action = conn.execute(text(key_on_id_sql(CREATED))).one()
    return ProfileKey(created=bool(created), name=name, on_delete=ACTIONS.get(action) if action else None)


def split_orphans(key: ProfileKey, orphans: int | None) -> tuple[int | None, int | None]:
    """(orphans, app rows kept) out of the profiles without an account that the full check counted."""
    if key.keeps_app_rows:
        return (None if orphans is None else 0), orphans
    return orphans, 0 if orphans is not None else None


__all__ = ["ACTIONS", "CREATED", "KEY_ON_ID", "ProfileKey", "applies", "key_on_id_sql", "read", "split_orphans"]
