"""A profile's values from its auth row, as SQL, from what the chain declares.

One home for "what the sync writes": the columns the revision the database
is at declares (``chain.declared_at``), narrowed to those the profile table
has (``profile_shape.fit``), each with its SQL expression over the auth row.
The backfill, ``repair`` and the stale check all build their
statements here, so a follow-up revision that adds a synced column is
backfilled, repaired and checked with no change to the package.

Concurrency rules every write here keeps (READ COMMITTED, row by row):

- creating a missing profile locks its account FOR KEY SHARE while it
  writes, so a hard delete either happened before (the account is not
  read) or waits for the profile (and the delete sync or the foreign key
  then removes it): no orphan;
- creating a missing profile never overwrites one (ON CONFLICT DO NOTHING):
  a profile the signup or update sync wrote meanwhile is newer;
- rewriting an existing profile locks its account FOR SHARE first, so it
  writes the newest committed values, and a concurrent change of the
  account waits and then rewrites the profile itself (its update sync).
"""

from __future__ import annotations

from ghostsync.chain import Declared

AUTH = "auth.users"
PROFILES = "public.users"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def insert_columns(declared: Declared) -> list[str]:
    return ["id", *declared.columns]


def insert_values(declared: Declared, row: str) -> list[str]:
    return [f"{row}.id", *(c.expression(row) for c in declared.columns.values())]


def stale_condition(declared: Declared, profile: str = "p", auth: str = "u") -> str:
    """True for a profile (joined to its account) whose synced columns disagree with the account."""
    parts = [f"{profile}.{quote(c.name)} IS DISTINCT FROM ({c.expression(auth)})" for c in declared.synced_columns]
    return "(" + " OR ".join(parts) + ")" if parts else "false"


def update_assignments(declared: Declared, source: str) -> list[str]:
    """``col = value`` for every column a rewrite sets, from the auth row ``source``."""
    out = []
    for column in declared.columns.values():
        value = column.update_expression(source)
        if value is not None:
            out.append(f"{quote(column.name)} = {value}")
    return out


def create_missing(declared: Declared, ids: str) -> str:
    """Create the missing profiles of the accounts whose ids ``ids`` (an SQL uuid[] expression)
    lists; returns one row per profile created."""
    cols = ", ".join(quote(c) for c in insert_columns(declared))
    vals = ", ".join(insert_values(declared, "u"))
    return (
        f"INSERT INTO {PROFILES} ({cols})\n"
        f"SELECT {vals}\n"
        f"FROM (SELECT a.* FROM {AUTH} AS a\n"
        f"      WHERE a.id = ANY ({ids})\n"
        f"        AND NOT EXISTS (SELECT 1 FROM {PROFILES} AS p WHERE p.id = a.id)\n"
        f"      FOR KEY SHARE OF a) AS u\n"
        f"ON CONFLICT (id) DO NOTHING\n"
        f"RETURNING id"
    )


def rewrite_from_auth(declared: Declared, ids: str, *, only_stale: bool) -> str:
    """Bring the profiles of the accounts ``ids`` lists up to date from their accounts (locked
    FOR SHARE); with ``only_stale``, only those that disagree. Returns one row per profile rewritten."""
    sets = ", ".join(update_assignments(declared, "s"))
    if not sets:  # a table with none of the synced columns: nothing to rewrite
        return "SELECT CAST(NULL AS uuid) AS id WHERE false"
    where = f" AND {stale_condition(declared, 'p', 'u')}" if only_stale else ""
    return (
        f"WITH source AS (\n"
        f"  SELECT u.* FROM {AUTH} AS u JOIN {PROFILES} AS p ON p.id = u.id\n"
        f"  WHERE u.id = ANY ({ids}){where}\n"
        f"  FOR SHARE OF u\n"
        f")\n"
        f"UPDATE {PROFILES} AS p SET {sets}\n"
        f"FROM source AS s WHERE p.id = s.id\n"
        f"RETURNING p.id"
    )


def stale_ids(declared: Declared) -> str:
    """Ids of stale profiles after ``:after`` (NULL: from the start), ``:limit`` at most, in id order."""
    return (
        f"SELECT u.id FROM {AUTH} AS u JOIN {PROFILES} AS p ON p.id = u.id\n"
        f"WHERE (CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid)) AND {stale_condition(declared)}\n"
        f"ORDER BY u.id LIMIT :limit"
    )


def ghost_ids() -> str:
    """Ids of accounts without a profile after ``:after`` (NULL: from the start), ``:limit`` at most."""
    return (
        f"SELECT u.id FROM {AUTH} AS u\n"
        f"WHERE (CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid))\n"
        f"  AND NOT EXISTS (SELECT 1 FROM {PROFILES} AS p WHERE p.id = u.id)\n"
        f"ORDER BY u.id LIMIT :limit"
    )


def orphan_ids() -> str:
    """Ids of profiles whose account is gone, after ``:after``, ``:limit`` at most (a row of an adopted
    table whose key allows a NULL id belongs to no account and is nobody's orphan: left out)."""
    return (
        f"SELECT p.id FROM {PROFILES} AS p\n"
        f"WHERE (CAST(:after AS uuid) IS NULL OR p.id > CAST(:after AS uuid))\n"
        f"  AND p.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {AUTH} AS u WHERE u.id = p.id)\n"
        f"ORDER BY p.id LIMIT :limit"
    )


def delete_orphans(ids: str) -> str:
    """Delete the profiles ``ids`` lists whose account is (still) gone; returns their ids."""
    return (
        f"DELETE FROM {PROFILES} AS p\n"
        f"WHERE p.id = ANY ({ids}) AND NOT EXISTS (SELECT 1 FROM {AUTH} AS u WHERE u.id = p.id)\n"
        f"RETURNING p.id"
    )


def upsert_from_auth(declared: Declared, ids: str) -> str:
    """Create or rewrite the profiles of the accounts ``ids`` lists from their accounts, locked
    FOR SHARE (what ``repair`` does for a recorded failed sync). Returns one row per profile written."""
    cols = ", ".join(quote(c) for c in insert_columns(declared))
    vals = ", ".join(insert_values(declared, "u"))
    sets = []
    for column in declared.columns.values():
        if column.on_update is not None:
            sets.append(f"{quote(column.name)} = {column.on_update.format(row='EXCLUDED')}")
        elif column.synced:
            sets.append(f"{quote(column.name)} = EXCLUDED.{quote(column.name)}")
    # a table with none of the synced columns: an existing profile has nothing to rewrite
    conflict = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    return (
        f"INSERT INTO {PROFILES} ({cols})\n"
        f"SELECT {vals}\n"
        f"FROM (SELECT a.* FROM {AUTH} AS a WHERE a.id = ANY ({ids}) FOR SHARE OF a) AS u\n"
        f"ON CONFLICT (id) {conflict}\n"
        f"RETURNING id"
    )
