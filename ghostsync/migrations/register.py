"""Whether an upgrade created a table or adopted the app's own, for the upgrade's log.

A revision's SQL decides on the database it runs on whether it creates a table
or adopts an existing one, and records the table in ghostsync's register
(``ghostsync.objects``). Online, ``existed`` (before the step) and
``log_table`` (after it) log which it was, at INFO on the ``alembic`` logger
tree (``alembic.ghostsync``), next to Alembic's own "Running upgrade" lines.
Offline (``--sql``) both do nothing: the script cannot know, and its SQL stays
as it is.
"""

from __future__ import annotations

import logging

from alembic import context, op
from sqlalchemy import text

from ghostsync.migrations import exposure

log = logging.getLogger("alembic.ghostsync")

SYNCED = ("email", "email_verified", "deleted_at", "created_at", "updated_at")
COLUMNS = text(
    "SELECT " + exposure.EXPOSED + " AS exposed, "
    "ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a "
    "      WHERE a.attrelid = pg_catalog.to_regclass(:name) AND a.attnum > 0 AND NOT a.attisdropped) AS present, "
    "ARRAY(SELECT o.name FROM ghostsync.objects AS o "
    "      WHERE o.kind = 'column' AND o.created AND o.name LIKE :name || '.%' "
    "        AND o.recorded_at = pg_catalog.now()) AS added"
)
RECORD = text(
    "SELECT created, revision, recorded_at < pg_catalog.now() AS earlier "
    "FROM ghostsync.objects WHERE kind = 'table' AND name = :name"
)


def existed(name: str) -> bool | None:
    """Whether table ``name`` exists now (None offline)."""
    if context.is_offline_mode():
        return None
    return bool(op.get_bind().execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar())


def log_table(name: str, existed_before: bool | None) -> None:
    """Log whether the step just run created table ``name``, adopted the app's existing one, or kept one
    an earlier install recorded (a downgrade leaves the tables and the register in place)."""
    if existed_before is None or context.is_offline_mode():
        return
    if not existed_before:
        log.info("ghostsync: %s created (no table of that name existed)", name)
        return
    row = op.get_bind().execute(RECORD, {"name": name}).first()
    if row is not None and row.earlier:
        log.info("ghostsync: %s kept as it is: an earlier install %s it (revision %s) and a downgrade left it",
                 name, "created" if row.created else "adopted", row.revision)
    else:
        log.info("ghostsync: %s adopted: the app's existing table, its rows, columns and privileges kept as "
                 "they are", name)
        _log_columns(name)


def _log_columns(name: str) -> None:
    """What an adoption did about the synced columns the app's table lacked: added them (recorded as
    ghostsync's), or, on a table other users can read, added nothing and syncs what the table has."""
    row = op.get_bind().execute(COLUMNS, {"name": name}).one()
    if row.added:
        log.info("ghostsync: %s: added column(s) %s (nullable, no default; ghostsync's, kept on downgrade)",
                 name, ", ".join(c for c in SYNCED if f"{name}.{c}" in row.added))
    absent = [c for c in SYNCED if c not in row.present and c != "deleted_at"]
    if absent and row.exposed:
        log.info("ghostsync: %s is %s: no column added, so no auth data reaches other users; ghostsync syncs "
                 "only the synced columns it has, and leaves out %s", name, exposure.WHY, ", ".join(absent))
