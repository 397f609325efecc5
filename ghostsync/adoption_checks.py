"""Status checks of an adopted public.users: profiles ghostsync cannot create, synced columns it leaves out.

Each check returns its findings as ``Check`` (code, severity, count, detail);
``status`` turns them into its problems and warnings.

- ``profile_cannot_be_created`` (problem): accounts without a profile whose
  recorded profile write failed because of the app's table, counted per cause
  with the column, constraint or trigger named: an app column NOT NULL without
  a default (ghostsync writes only its synced columns, never an app column), a
  CHECK, an app BEFORE INSERT trigger on public.users that returned NULL (the
  insert wrote no row), or any other recorded error.
- ``synced_columns_absent`` (warning): the synced columns the adopted table
  lacks and ghostsync therefore leaves out, and why (a table other users can
  read gets no column of auth data: ``ghostsync.migrations.exposure``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ghostsync import profile_shape
from ghostsync.chain import Declared
from ghostsync.migrations import exposure
from ghostsync.migrations.jobs import NO_ROW_WRITTEN


@dataclass(frozen=True)
class Check:
    code: str
    severity: str  # "problem" or "warning"
    count: int
    detail: str


_UNCREATABLE = text(
    "SELECT f.sqlstate, f.message FROM ghostsync.sync_failures AS f "
    "JOIN auth.users AS u ON u.id = f.user_id "
    "WHERE NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = f.user_id)"
)


def cause(sqlstate: str, message: str) -> str:
    """What of the app's table stopped a profile being created, named as its own words."""
    found = re.search(r'null value in column "([^"]+)"', message)
    if sqlstate == "23502" and found:
        return f"column {found.group(1)} is NOT NULL without a default"
    found = re.search(r'violates check constraint "([^"]+)"', message)
    if sqlstate == "23514" and found:
        return f"CHECK constraint {found.group(1)}"
    if sqlstate == NO_ROW_WRITTEN:
        return message
    return f"{sqlstate} {message}"


def profiles_cannot_be_created(conn: Connection) -> list[Check]:
    """One problem per cause: the ghosts whose profile could not be created, counted."""
    if conn.execute(text("SELECT to_regclass('ghostsync.sync_failures')")).scalar() is None:
        return []
    causes = Counter(cause(state, message) for state, message in conn.execute(_UNCREATABLE))
    return [Check("profile_cannot_be_created", "problem", n,
                  f"{n} profile(s) cannot be created: {why}; ghostsync writes only its synced columns, never an "
                  "app column: let the app's table take a row of them (or let the app create these profiles), "
                  "then run `ghostsync repair`")
            for why, n in sorted(causes.items())]


def synced_columns_absent(conn: Connection, declared: Declared) -> list[Check]:
    """A warning naming the synced columns the profile table lacks (ghostsync leaves them out)."""
    missing = profile_shape.absent(conn, declared)
    if not missing:
        return []
    exposed = bool(conn.execute(text("SELECT coalesce(" + exposure.EXPOSED + ", false)")).scalar())
    why = (f"the table is {exposure.WHY}, so ghostsync adds no column of auth data to it" if exposed
           else "the app's table does not have them")
    return [Check("synced_columns_absent", "warning", len(missing),
                  f"public.users has no column {', '.join(missing)}: ghostsync syncs only the synced columns it "
                  f"has ({why})")]
