"""What the profile table lets end users read of the synced columns of every row.

``public.users`` is the app's table whether ghostsync created or adopted it: opening it to
end users (Supabase's "Public profiles are viewable by everyone" starter: a SELECT policy
``USING (true)`` and SELECT granted to anon) is the app's decision, so status warns and
never pages. But what ghostsync writes there, the synced columns (``email`` above all),
then becomes readable to anyone with the anon key; the warning names those columns and the
column privileges that close them.

A role (anon, authenticated) reads the synced columns of every row when it has SELECT on
them (``has_column_privilege``: a table grant, a column grant or PUBLIC's) and either row
level security is off or a permissive SELECT (or ALL) policy for it or PUBLIC has a USING
clause that does not restrict to the reader's own row: one that does not compare
``auth.uid()`` for equality. That policy test is the heuristic the revisions use to decide whether a
table is readable by other users (``ghostsync.migrations.exposure.open_policy``: its one
home, applied here role by role and column by column); a policy can restrict rows in other
ways, as docs/OPERATIONS.md says.

``QUERY`` is the one query behind the warning: ``status`` runs it, ``verify-sql`` embeds
it. Formatted with ``synced`` (an SQL ``text[]`` expression: the columns ghostsync writes, as the
revision declares), it returns one row, one text column ``j``: null when nothing is
exposed, else a jsonb object of the warning's fields (``roles``, ``columns``,
``because``, ``close``).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ghostsync import names
from ghostsync.migrations import exposure as heuristic

API_ROLES = ("anon", "authenticated")

QUERY = """SELECT CASE WHEN pg_catalog.count(*) > 0 THEN pg_catalog.jsonb_build_object(
    'roles', pg_catalog.string_agg(e.role, ', ' ORDER BY e.role),
    'columns', (SELECT pg_catalog.string_agg(DISTINCT c.col, ', ')
                FROM pg_catalog.unnest(pg_catalog.array_agg(e.cols)) AS x(cols)
                CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.string_to_array(x.cols, ',')) AS c(col)),
    'because', pg_catalog.string_agg(e.role || ': ' || e.because, '; ' ORDER BY e.role),
    'close', pg_catalog.string_agg(e.close, '; ' ORDER BY e.role))::text END AS j
FROM (
  SELECT r.role, pg_catalog.array_to_string(r.exposed, ',') AS cols, r.because,
         pg_catalog.format('REVOKE SELECT ON %s FROM %I', r.tbl, r.role)
           || CASE WHEN pg_catalog.cardinality(r.keep) > 0 THEN pg_catalog.format('; GRANT SELECT (%s) ON %s TO %I',
                pg_catalog.array_to_string(r.keep, ', '), r.tbl, r.role) ELSE '' END AS close
  FROM (
    SELECT o.rolname::text AS role, '{table}'::text AS tbl,
      ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname::text = ANY ({synced})
              AND pg_catalog.has_column_privilege(o.oid, t.oid, a.attnum, 'SELECT') ORDER BY a.attnum) AS exposed,
      ARRAY(SELECT pg_catalog.quote_ident(a.attname) FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
              AND NOT (a.attname::text = ANY ({synced}))
              AND pg_catalog.has_column_privilege(o.oid, t.oid, a.attnum, 'SELECT') ORDER BY a.attnum) AS keep,
      CASE WHEN NOT t.relrowsecurity THEN 'row level security is off'
           ELSE (SELECT 'policy ' || pg_catalog.string_agg(pg_catalog.quote_ident(p.polname::text), ', policy '
                                                            ORDER BY p.polname)
                        || ' does not restrict rows to the reader''s own (no auth.uid())'
                 FROM pg_catalog.pg_policy AS p
                 WHERE {open_policy}) END
        AS because
    FROM pg_catalog.pg_class AS t
    CROSS JOIN pg_catalog.pg_roles AS o
    WHERE t.oid = pg_catalog.to_regclass('{table}') AND o.rolname IN ({roles})
  ) AS r
  WHERE pg_catalog.cardinality(r.exposed) > 0 AND r.because IS NOT NULL
) AS e"""


def query(synced: str) -> str:
    """``QUERY`` for the synced columns ``synced`` (an SQL text[] expression)."""
    return QUERY.format(synced=synced, table=names.PROFILES, roles=", ".join(f"'{r}'" for r in API_ROLES),
                        open_policy=heuristic.open_policy("t", "o.oid = ANY (p.polroles)"))


def synced_array(columns: list[str]) -> str:
    """The SQL text[] literal of ``columns``."""
    return "ARRAY[" + ", ".join("'" + c.replace("'", "''") + "'" for c in columns) + "]::text[]"


def exposed(conn: Connection, synced: list[str]) -> dict[str, Any] | None:
    """The fields of the warning (``roles``, ``columns``, ``because``, ``close``), or None."""
    found = conn.execute(text(query(synced_array(synced)))).scalar()
    return None if found is None else dict(json.loads(found))


__all__ = ["API_ROLES", "QUERY", "exposed", "query", "synced_array"]
