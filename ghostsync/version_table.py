"""Where the database keeps Alembic's version table, found in the database itself.

A host's ``env.py`` may keep the table in any schema under any name
(``version_table_schema``, ``version_table`` in its ``context.configure``);
ghostsync's commands cannot read that from the ini, and running the host's
``env.py`` would connect wherever the host's settings point. So ``find`` looks
in the database: every table the role may read that has Alembic's column
``version_num`` is a version table, and the one holding a revision of
ghostsync's branch (a member of the configured chain, or a ``ghostsync_`` id
a newer ghostsync wrote) is the one the host's Alembic records ghostsync in.
With no such row anywhere, the rows of every version table are returned (for
the caller's advice); two tables both holding ghostsync's branch is refused:
only the host's ``env.py`` knows which one Alembic uses.

``public.alembic_version``, Alembic's default, is found the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

OWN_PREFIX = "ghostsync_"

# Tables (plain or partitioned) with a live column version_num, outside the system schemas,
# that the role may read; names quoted as SQL needs them.
CANDIDATES = """
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE a.attname = 'version_num' AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p')
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname <> 'public', 1
"""


class AmbiguousVersionTable(RuntimeError):
    """More than one version table records ghostsync's branch; the message names them."""


@dataclass(frozen=True)
class VersionTable:
    """A version table (or, when none records ghostsync, every one: ``name`` lists them) and its rows."""

    name: str
    rows: tuple[str, ...]


def all_tables(conn: Connection) -> list[VersionTable]:
    """Every version table the role may read, ``public``'s first, with its rows."""
    found = []
    for (name,) in conn.execute(text(CANDIDATES)).all():
        # name comes from format('%I.%I'): quoted as an identifier by the server
        rows = tuple(str(r[0]) for r in conn.execute(text(f"SELECT version_num::text FROM {name} ORDER BY 1")))
        found.append(VersionTable(name, rows))
    return found


def records_ghostsync(table: VersionTable, members: Collection[str]) -> bool:
    return any(r in members or r.startswith(OWN_PREFIX) for r in table.rows)


def find(conn: Connection, members: Collection[str]) -> VersionTable | None:
    """The version table that records ghostsync's branch (``members``: its revision ids); with none
    recording it, every version table's rows together; None when the database has no version table."""
    tables = all_tables(conn)
    ours = [t for t in tables if records_ghostsync(t, members)]
    if len(ours) > 1:
        raise AmbiguousVersionTable(
            "ghostsync's branch is recorded in more than one version table ("
            + "; ".join(f"{t.name}: {', '.join(t.rows)}" for t in ours)
            + "): only the host's env.py (its version_table_schema / version_table) says which one Alembic uses, "
            "and ghostsync cannot read it")
    if ours:
        return ours[0]
    if not tables:
        return None
    return VersionTable(", ".join(t.name for t in tables), tuple(sorted(r for t in tables for r in t.rows)))
