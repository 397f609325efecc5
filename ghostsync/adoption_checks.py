"""Status checks of an adopted public.users: profiles ghostsync cannot create, synced columns it leaves out.

Two findings of the catalogue (``ghostsync.findings``), each from one query that
``status`` runs and ``verify-sql`` embeds:

- ``findings.PROFILE_CANNOT_BE_CREATED`` (``UNCREATABLE``): accounts without a
  profile whose recorded profile write failed, counted per cause with the
  column, constraint or trigger named (``CAUSE``): an app column NOT NULL
  without a default (ghostsync writes only its synced columns, never an app
  column), a CHECK, an app BEFORE INSERT trigger on public.users that returned
  NULL (the insert wrote no row: recorded with SQLSTATE ``02000``), or any
  other recorded error.
- ``findings.SYNCED_COLUMNS_ABSENT`` (``absent_why``): the synced columns the
  adopted table lacks and ghostsync therefore leaves out, and why (a table
  other users can read gets no column of auth data:
  ``ghostsync.migrations.exposure``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ghostsync import profile_shape
from ghostsync.chain import Declared
from ghostsync.findings import sql_literal
from ghostsync.migrations import exposure
from ghostsync.migrations.jobs import NO_ROW_WRITTEN

# What of the app's table stopped a profile being created, named in its own words (f: a sync_failures row).
CAUSE = (
    "CASE WHEN f.sqlstate = '23502' AND f.message ~ 'null value in column \"[^\"]+\"' THEN pg_catalog.format("
    "'column %s is NOT NULL without a default',"
    " pg_catalog.substring(f.message, 'null value in column \"([^\"]+)\"'))"
    " WHEN f.sqlstate = '23514' AND f.message ~ 'violates check constraint \"[^\"]+\"' THEN pg_catalog.format("
    "'CHECK constraint %s', pg_catalog.substring(f.message, 'violates check constraint \"([^\"]+)\"'))"
    f" WHEN f.sqlstate = {sql_literal(NO_ROW_WRITTEN)} THEN f.message"
    " ELSE f.sqlstate || ' ' || f.message END"
)

# One row per cause (why, n), by cause in byte order; ghostsync.sync_failures must exist.
UNCREATABLE = (
    f"SELECT c.why, pg_catalog.count(*) AS n FROM (SELECT {CAUSE} AS why FROM ghostsync.sync_failures AS f "
    "JOIN auth.users AS u ON u.id = f.user_id "
    "WHERE NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = f.user_id)) AS c "
    "GROUP BY c.why ORDER BY c.why COLLATE \"C\""
)

EXPOSED_WHY = f"the table is {exposure.WHY}, so ghostsync adds no column of auth data to it"
NOT_THERE_WHY = "the app's table does not have them"


def absent_why() -> str:
    """Why the synced columns are absent, as an SQL text expression (the exposure heuristic decides)."""
    return (f"CASE WHEN coalesce({exposure.EXPOSED}, false) THEN {sql_literal(EXPOSED_WHY)} "
            f"ELSE {sql_literal(NOT_THERE_WHY)} END")


@dataclass(frozen=True)
class Uncreatable:
    """Profiles that cannot be created for one cause."""

    why: str
    count: int


def profiles_cannot_be_created(conn: Connection) -> list[Uncreatable]:
    """The ghosts whose profile could not be created, counted per cause."""
    if conn.execute(text("SELECT to_regclass('ghostsync.sync_failures')")).scalar() is None:
        return []
    return [Uncreatable(str(why), int(n)) for why, n in conn.execute(text(UNCREATABLE))]


def columns_left_out(conn: Connection, declared: Declared) -> tuple[list[str], str] | None:
    """The synced columns the profile table lacks (ghostsync leaves them out) and why, or None."""
    missing = profile_shape.absent(conn, declared)
    if not missing:
        return None
    return missing, str(conn.execute(text("SELECT " + absent_why())).scalar())


__all__ = ["CAUSE", "UNCREATABLE", "Uncreatable", "absent_why", "columns_left_out", "profiles_cannot_be_created"]
