"""The synced columns an adopted public.users has, and how each is written: the runtime's side of adoption.

The chain declares what ghostsync syncs (``chain.declared_at``); an adopted
table may lack some of it: on a table other users can read, revision 0001
adds no column (``ghostsync.migrations.exposure``) and ghostsync syncs only
the synced columns the table has. ``fit`` narrows a declaration to those, so
every statement ``ghostsync.sync`` builds (backfill, repair, the status
comparisons) names only columns that exist.

A ``timestamp without time zone`` column is written and compared as UTC,
whatever the session's TimeZone: its expression becomes ``(...) AT TIME ZONE
'UTC'`` (the auth row's timestamps are ``timestamptz``; an implicit cast would
use the session's zone, and a client under PGTZ=Europe/Berlin would write, or
see as stale, every such value an hour off).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy.engine import Connection

from ghostsync.chain import Declared
from ghostsync.migrations.declarations import Column
from ghostsync.migrations.profile_columns import LOCAL_TIMESTAMP
from ghostsync.migrations.profile_columns import table_columns as columns


def as_utc(column: Column) -> Column:
    """``column`` written into a ``timestamp without time zone``: its values as UTC wall-clock time."""
    on_update = f"(({column.on_update}) AT TIME ZONE 'UTC')" if column.on_update is not None else None
    return dataclasses.replace(column, source=f"(({column.source}) AT TIME ZONE 'UTC')", on_update=on_update)


def fit(conn: Connection, declared: Declared) -> Declared:
    """``declared`` with only the columns public.users has, each written as its type needs."""
    found = columns(conn)
    if not found:
        return declared
    fitted = {name: (as_utc(c) if found[name] == LOCAL_TIMESTAMP else c)
              for name, c in declared.columns.items() if name in found}
    return dataclasses.replace(declared, columns=fitted)


def absent(conn: Connection, declared: Declared) -> list[str]:
    """The declared columns public.users lacks (what ghostsync leaves out on a table other users can read)."""
    found = columns(conn)
    return [name for name in declared.columns if found and name not in found]
