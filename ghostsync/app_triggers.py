"""App triggers on auth.users whose function writes public.users (a status warning of the catalogue).

One row per trigger on ``auth.users`` that ghostsync did not create (not
recorded in ``ghostsync.objects``, calling no function of the ``ghostsync``
schema: drift judges those) whose function's text writes
``public.users``. This is a heuristic on the text (``pg_proc.prosrc``):
``INSERT INTO`` or ``UPDATE`` followed by ``public.users`` or a bare
``users`` (quoted or not, any case); a write built with dynamic SQL is not
seen, and a mention inside a comment is. Such a trigger works beside
ghostsync (ghostsync's profile write runs at COMMIT, after it, and writes
only ghostsync's columns): the warning (``findings.APP_TRIGGER_WRITES_PROFILES``)
says where the profile's app columns come from.

``query`` is the one query behind the warning: ``status`` runs it with the
register read from ``ghostsync.objects``, ``verify-sql`` embeds it with the
register it has read already.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

# INSERT INTO / UPDATE [ONLY] [public.]users, each name quoted or not; \M: users ends the word.
WRITES_PROFILES = r'(insert\s+into|update)\s+(only\s+)?("?public"?\s*\.\s*)?"?users"?\M'

QUERY = """SELECT t.tgname::text AS trigger, p.oid::pg_catalog.regprocedure::text AS function
FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
WHERE t.tgrelid = pg_catalog.to_regclass('auth.users') AND NOT t.tgisinternal
  AND p.pronamespace IS DISTINCT FROM pg_catalog.to_regnamespace('ghostsync')
  AND p.prosrc ~* {pattern}
  AND NOT coalesce({recorded}, false)"""

# status's reading of the register: whether ghostsync recorded trigger t
RECORDED = ("EXISTS (SELECT 1 FROM ghostsync.objects AS o "
            "WHERE o.kind = 'trigger' AND o.name = t.tgname || ' ON auth.users')")


def query(recorded: str) -> str:
    """The app triggers that write public.users, ordered by name; ``recorded``: an SQL boolean over
    ``t`` (pg_trigger), true where ghostsync recorded the trigger as its own."""
    pattern = "'" + WRITES_PROFILES.replace("'", "''") + "'"
    return QUERY.format(pattern=pattern, recorded=recorded)


@dataclass(frozen=True)
class AppTrigger:
    """One app trigger on auth.users whose function writes public.users."""

    trigger: str
    function: str


def find(conn: Connection) -> list[AppTrigger]:
    """The app triggers on auth.users whose function's text writes public.users, by trigger name."""
    rows = conn.execute(text(query(RECORDED) + " ORDER BY t.tgname")).all()
    return [AppTrigger(trigger=row[0], function=row[1]) for row in rows]


__all__ = ["QUERY", "RECORDED", "WRITES_PROFILES", "AppTrigger", "find", "query"]
