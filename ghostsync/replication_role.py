"""Settings that make the auth service's writes skip ghostsync's triggers.

``session_replication_role = replica`` makes a session skip every trigger not set ``ENABLE
ALWAYS`` or ``ENABLE REPLICA`` (foreign-key checks included). Set for the auth service's role
(``ALTER ROLE supabase_auth_admin [IN DATABASE ...] SET``) or for the database (``ALTER DATABASE
... SET``, ``ALTER ROLE ALL [IN DATABASE ...] SET``), it turns every signup into a ghost, and the
catalogs say nothing else is wrong. ``QUERY`` reads ``pg_db_role_setting`` (a shared catalog:
cheap, read-only, also on a hot standby) and returns the one setting that wins for the auth role
in this database (role and database, then role, then database, then every role: PostgreSQL's
precedence) when it is ``replica``: one row, one text column ``j``, a jsonb array of
``{"setting", "value", "reset"}``, empty when the auth role's sessions fire ghostsync's triggers.

``status`` (quick and full) runs it and ``verify-sql`` embeds it: one query for both.
Making ghostsync's triggers ``ENABLE ALWAYS`` is no cure: logical-replication apply workers
and restores run in replica mode on purpose and would then write profiles twice.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

AUTH_ROLE = "supabase_auth_admin"

QUERY = f"""SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
         'setting', w.setting, 'value', w.value, 'reset', w.reset)), '[]')::text AS j
FROM (
  SELECT x.setting, x.value, x.setting || ' RESET session_replication_role' AS reset
  FROM (
    SELECT CASE WHEN r.setrole <> 0 AND r.setdatabase <> 0 THEN 1 WHEN r.setrole <> 0 THEN 2
                WHEN r.setdatabase <> 0 THEN 3 ELSE 4 END AS precedence,
           CASE WHEN r.setrole <> 0 AND r.setdatabase <> 0 THEN pg_catalog.format('ALTER ROLE %I IN DATABASE %I',
                  '{AUTH_ROLE}', pg_catalog.current_database())
                WHEN r.setrole <> 0 THEN pg_catalog.format('ALTER ROLE %I', '{AUTH_ROLE}')
                WHEN r.setdatabase <> 0 THEN pg_catalog.format('ALTER DATABASE %I', pg_catalog.current_database())
                ELSE 'ALTER ROLE ALL' END AS setting,
           pg_catalog.split_part(c.entry, '=', 2) AS value
    FROM pg_catalog.pg_db_role_setting AS r
    CROSS JOIN LATERAL pg_catalog.unnest(r.setconfig) AS c(entry)
    WHERE r.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database AS d
                                WHERE d.datname = pg_catalog.current_database()))
      AND r.setrole IN (0, coalesce(pg_catalog.to_regrole('{AUTH_ROLE}')::pg_catalog.oid, 0))
      AND pg_catalog.split_part(c.entry, '=', 1) = 'session_replication_role'
  ) AS x
  ORDER BY x.precedence
  LIMIT 1
) AS w
WHERE w.value = 'replica'"""


def skipping_settings(conn: Connection) -> list[dict[str, Any]]:
    """The setting (0 or 1) that makes the auth role's sessions skip ghostsync's triggers."""
    found: list[dict[str, Any]] = json.loads(conn.execute(text(QUERY)).scalar_one())
    return found


__all__ = ["AUTH_ROLE", "QUERY", "skipping_settings"]
