"""App triggers on auth.users whose function writes public.users, or rows keyed to it (status findings).

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

``keyed_query`` finds what fails every signup (``findings.APP_KEY_CHECKED_BEFORE_PROFILE``):
an app trigger on ``auth.users`` that fires on INSERT and whose function's text inserts
into a table whose foreign key to ``public.users`` is checked at the end of the
statement (not ``DEFERRABLE INITIALLY DEFERRED``), that fires for the auth service (not
disabled, not replica-only), where no app trigger on ``auth.users`` that fires on INSERT
inserts profiles (``INSERTS_PROFILES``: the profile would then be there, from the app),
while ghostsync's insert sync fires at COMMIT
(a deferred constraint trigger of ghostsync's on INSERT is there: ghostsync_0010 on).
The row the trigger inserts then refers to a profile that is not there yet. The same
heuristic: ``INSERT INTO`` followed by the table's name (schema-qualified or not,
quoted or not); a write built with dynamic SQL, or done by another function the
trigger calls, is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

# INSERT INTO / UPDATE [ONLY] [public.]users, each name quoted or not; \M: users ends the word.
WRITES_PROFILES = r'(insert\s+into|update)\s+(only\s+)?("?public"?\s*\.\s*)?"?users"?\M'
# INSERT INTO [public.]users: a function that creates profiles
INSERTS_PROFILES = r'insert\s+into\s+("?public"?\s*\.\s*)?"?users"?\M'

QUERY = """SELECT t.tgname::text AS trigger, p.oid::pg_catalog.regprocedure::text AS function
FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
WHERE t.tgrelid = pg_catalog.to_regclass('auth.users') AND NOT t.tgisinternal
  AND p.pronamespace IS DISTINCT FROM pg_catalog.to_regnamespace('ghostsync')
  AND p.prosrc ~* {pattern}
  AND NOT coalesce({recorded}, false)"""

KEYED_QUERY = r"""SELECT t.tgname::text AS trigger, p.oid::pg_catalog.regprocedure::text AS function,
       pg_catalog.format('%I.%I', n.nspname, r.relname) AS referencing, c.conname::text AS key
FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_constraint AS c
  ON c.contype = 'f' AND c.confrelid = pg_catalog.to_regclass('public.users') AND c.conrelid <> c.confrelid
     AND NOT c.condeferred
JOIN pg_catalog.pg_class AS r ON r.oid = c.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = r.relnamespace
WHERE t.tgrelid = pg_catalog.to_regclass('auth.users') AND NOT t.tgisinternal AND (t.tgtype & 4) <> 0
  AND t.tgenabled IN ('O', 'A')
  AND p.pronamespace IS DISTINCT FROM pg_catalog.to_regnamespace('ghostsync')
  AND NOT coalesce({recorded}, false)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS w JOIN pg_catalog.pg_proc AS wp ON wp.oid = w.tgfoid
                  WHERE w.tgrelid = t.tgrelid AND NOT w.tgisinternal AND (w.tgtype & 4) <> 0
                    AND w.tgenabled IN ('O', 'A')
                    AND wp.pronamespace IS DISTINCT FROM pg_catalog.to_regnamespace('ghostsync')
                    AND wp.prosrc ~* {inserts})
  AND p.prosrc ~* ('insert\s+into\s+(only\s+)?("?' || pg_catalog.regexp_replace(n.nspname, '(\W)', '\\\1', 'g')
                   || '"?\s*\.\s*)?"?' || pg_catalog.regexp_replace(r.relname, '(\W)', '\\\1', 'g') || '"?\M')
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS z JOIN pg_catalog.pg_proc AS zp ON zp.oid = z.tgfoid
              WHERE z.tgrelid = t.tgrelid AND z.tgconstraint <> 0 AND z.tginitdeferred AND (z.tgtype & 4) <> 0
                AND zp.pronamespace = pg_catalog.to_regnamespace('ghostsync'))"""

# status's reading of the register: whether ghostsync recorded trigger t
RECORDED = ("EXISTS (SELECT 1 FROM ghostsync.objects AS o "
            "WHERE o.kind = 'trigger' AND o.name = t.tgname || ' ON auth.users')")


def query(recorded: str) -> str:
    """The app triggers that write public.users, ordered by name; ``recorded``: an SQL boolean over
    ``t`` (pg_trigger), true where ghostsync recorded the trigger as its own."""
    pattern = "'" + WRITES_PROFILES.replace("'", "''") + "'"
    return QUERY.format(pattern=pattern, recorded=recorded)


def keyed_query(recorded: str) -> str:
    """The app triggers that insert rows keyed to a profile not written yet (``KEYED_QUERY``); ``recorded``
    as for ``query``."""
    inserts = "'" + INSERTS_PROFILES.replace("'", "''") + "'"
    return KEYED_QUERY.format(inserts=inserts, recorded=recorded)


@dataclass(frozen=True)
class AppTrigger:
    """One app trigger on auth.users whose function writes public.users."""

    trigger: str
    function: str


def find(conn: Connection) -> list[AppTrigger]:
    """The app triggers on auth.users whose function's text writes public.users, by trigger name."""
    rows = conn.execute(text(query(RECORDED) + " ORDER BY t.tgname")).all()
    return [AppTrigger(trigger=row[0], function=row[1]) for row in rows]


@dataclass(frozen=True)
class KeyedTrigger:
    """One app trigger on auth.users whose function inserts into ``referencing``, whose foreign key
    ``key`` to public.users is checked before ghostsync writes the profile."""

    trigger: str
    function: str
    referencing: str
    key: str


def find_keyed(conn: Connection) -> list[KeyedTrigger]:
    """The app triggers that insert rows keyed to a profile not written yet, by trigger and table."""
    rows = conn.execute(text(keyed_query(RECORDED) + " ORDER BY 1, 3, 4")).all()
    return [KeyedTrigger(trigger=row[0], function=row[1], referencing=row[2], key=row[3]) for row in rows]


__all__ = ["INSERTS_PROFILES", "KEYED_QUERY", "QUERY", "RECORDED", "WRITES_PROFILES", "AppTrigger", "KeyedTrigger",
           "find", "find_keyed", "keyed_query", "query"]
