"""The status warning ``app_trigger_writes_profiles``: app triggers on auth.users that write public.users.

One finding per trigger on ``auth.users`` that ghostsync did not create (not
recorded in ``ghostsync.objects``, calling no function of the ``ghostsync``
schema: drift judges those) whose function's text writes
``public.users``. This is a heuristic on the text (``pg_proc.prosrc``):
``INSERT INTO`` or ``UPDATE`` followed by ``public.users`` or a bare
``users`` (quoted or not, any case); a write built with dynamic SQL is not
seen, and a mention inside a comment is. Such a trigger works beside
ghostsync (ghostsync's profile write runs at COMMIT, after it, and writes
only ghostsync's columns): the warning says where the profile's app columns
come from, and that a profile the app writes is the app's rule too.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

CODE = "app_trigger_writes_profiles"
SEVERITY = "warning"

# INSERT INTO / UPDATE [ONLY] [public.]users, each name quoted or not; \M: users ends the word.
WRITES_PROFILES = r'(insert\s+into|update)\s+(only\s+)?("?public"?\s*\.\s*)?"?users"?\M'

QUERY = text("""
SELECT t.tgname::text, p.oid::regprocedure::text
FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
WHERE t.tgrelid = 'auth.users'::regclass AND NOT t.tgisinternal
  AND p.pronamespace <> 'ghostsync'::regnamespace
  AND p.prosrc ~* :pattern
  AND (pg_catalog.to_regclass('ghostsync.objects') IS NULL OR NOT EXISTS (
    SELECT 1 FROM ghostsync.objects AS o WHERE o.kind = 'trigger' AND o.name = t.tgname || ' ON auth.users'))
ORDER BY t.tgname
""")


@dataclass(frozen=True)
class AppTriggerFinding:
    """One app trigger on auth.users whose function writes public.users."""

    trigger: str
    function: str
    code: str = CODE
    severity: str = SEVERITY
    count: int = 1

    @property
    def detail(self) -> str:
        return (f"app trigger {self.trigger} on auth.users (function {self.function}) writes public.users: "
                "ghostsync writes only its synced columns of that profile, at COMMIT after the app's write "
                "(a match on the function's text)")


def find(conn: Connection) -> list[AppTriggerFinding]:
    """The app triggers on auth.users whose function's text writes public.users, by trigger name."""
    if conn.execute(text("SELECT to_regclass('auth.users')")).scalar() is None:
        return []
    rows = conn.execute(QUERY, {"pattern": WRITES_PROFILES}).all()
    return [AppTriggerFinding(trigger=row[0], function=row[1]) for row in rows]
