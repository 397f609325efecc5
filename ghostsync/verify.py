"""``ghostsync verify-sql``: ``ghostsync status --json`` as one read-only SQL statement.

For teams that deploy with the Supabase CLI and run no Python: the script runs in the
SQL editor or ``psql -x -f verify-trigger.sql`` and returns ONE row whose columns are
the keys of ``ghostsync status --json`` (schema_version 2; objects as jsonb), with the
same values and the same verdict, for the revision the database is at. Its advice names
the commands of the Supabase CLI road (``roads.SUPABASE_CLI``: export, then ``supabase db
push``), as ``status.collect(..., road=roads.SUPABASE_CLI)`` words it.

Since nothing but SQL runs, the script carries what every revision of ghostsync's branch
declares (the functions' bodies, the triggers' definitions, the synced columns, the jobs,
and the advice ``status`` gives on that road), as one jsonb literal, and picks the revision recorded
in the version table (``public.alembic_version``, or the one a host's env.py names), directly or held
by a host's row through ``depends_on``. Tables that may not exist (the profile table before
install, ``ghostsync.sync_failures`` before its revision, ...) are read through
``query_to_xml`` so that the statement parses on every database; trigger definitions
are read under an empty search_path (``set_config(..., true)`` around the read, then the
caller's path again), as ``status`` reads them. The statement writes nothing; it runs
in a read-only transaction and on a hot standby.

Where status cannot check (no auth.users, no public.users, no revision of ghostsync's
branch in alembic_version, an unknown or doubled revision row), the row has ``up``
false, ``healthy`` false and ``error`` = {code, message}, as ``status --json`` prints
then; its other columns are null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ghostsync import __version__, chain, drift, health, names, roads
from ghostsync.chain import Declared

# The columns of the row, in the order of Status.as_dict().
COLUMNS = ("schema_version", "up", "check", "healthy", "revision", "head", "at_head", "standby", "ghosts",
           "orphans", "stale_profiles", "failed_syncs", "auth_users", "profiles", "triggers", "functions",
           "app_triggers", "tables", "jobs", "counters", "problems", "warnings", "error")


def counts_sql(declared: Declared) -> str:
    """``health.full_counts`` for ``declared``, as one row with one text column ``j`` (jsonb)."""
    return f"SELECT pg_catalog.to_jsonb(c)::text AS j FROM ({health.full_counts_sql(declared)}) AS c"


def declarations(config: str | Path | None = None, road: roads.Road = roads.SUPABASE_CLI) -> dict[str, Any]:
    """What each revision of ghostsync's branch declares, as the scripts embed it, and the advice of
    ``road`` (the scripts are the Supabase CLI road's)."""
    from ghostsync import status

    script = chain.script_directory(config)
    head = chain.head(script)
    ordered = [rev.revision for rev in chain.path_to(script, head)]
    bodies: list[str] = []
    revisions: dict[str, Any] = {}

    def body_index(text: str) -> int:
        if text not in bodies:
            bodies.append(text)
        return bodies.index(text)

    for revision in [None, *ordered]:
        declared = chain.declared_at(revision, script)
        revisions[revision or ""] = {
            "functions": [[signature, body_index(declared.body(signature)),
                           status.reinstall_advice(declared, signature, revision, script, road)]
                          for signature in declared.functions],
            "triggers": [[name, trigger.table, trigger.definition,
                          status.reinstall_advice(declared, name, revision, script, road)]
                         for name, trigger in declared.triggers.items()],
            "columns": [[c.name, c.max_length, c.nullable] for c in declared.columns.values()],
            "synced": ", ".join(c.name for c in declared.synced_columns),
            "jobs": status.monitored_jobs(declared),
            "counts": counts_sql(declared),
        }
    return {"head": head, "members": ordered, "holds": held_through_dependencies(script), "revisions": revisions,
            "bodies": bodies, "advice": {"install": road.install, "newer": road.newer}}


def held_through_dependencies(script: Any) -> dict[str, str]:
    """Each revision off ghostsync's branch whose ``depends_on`` holds one of its revisions -> the newest one
    (``chain.standing``): where ghostsync stands when alembic_version keeps only a host's row."""
    members = chain.branch_revisions(script)
    held: dict[str, str] = {}
    for rev in script.walk_revisions():
        if rev.revision not in members:
            found = chain.standing(script, [rev.revision])
            if len(found) == 1:
                held[rev.revision] = found[0]
    return held


def embedded(declared: dict[str, Any]) -> str:
    """``declared`` as the JSON text the scripts quote in ``$ghostsync_declared$``."""
    payload = json.dumps(declared, sort_keys=True, separators=(",", ":"))
    if "$ghostsync_declared$" in payload:
        raise ValueError("a declaration contains the scripts' quote tag")
    return payload


def _dynamic(query: str) -> str:
    """The jsonb that ``query`` (an SQL text expression; one row, one text column j) returns,
    run through query_to_xml so the statement parses where its tables do not exist."""
    return ("(SELECT x.j::jsonb FROM XMLTABLE('/table/row' PASSING pg_catalog.query_to_xml("
            f"{query}, true, false, '') COLUMNS j text PATH 'j') AS x)")


def _iso(column: str) -> str:
    """A timestamptz as Python's isoformat() writes it (what status --json prints)."""
    return (f"CASE WHEN {column} IS NULL THEN NULL ELSE pg_catalog.to_char({column}, "
            f"''YYYY-MM-DD\"T\"HH24:MI:SS'') || CASE WHEN pg_catalog.to_char({column}, ''US'') <> ''000000'' "
            f"THEN ''.'' || pg_catalog.to_char({column}, ''US'') ELSE '''' END || "
            f"pg_catalog.to_char({column}, ''TZH:TZM'') END")


# A trigger's pg_trigger.tgenabled as status names it (ghostsync.drift).
FIRING = ("CASE r.enabled " + "".join(f"WHEN '{code}' THEN '{state}' " for code, state in drift.FIRING.items())
          + "ELSE 'disabled' END")

QUERY = r"""WITH
decl AS MATERIALIZED (
  SELECT $ghostsync_declared${declared}$ghostsync_declared$::jsonb AS d
),
env AS MATERIALIZED (
  SELECT pg_catalog.to_regclass('auth.users') IS NOT NULL AS has_auth,
         pg_catalog.to_regclass('public.users') IS NOT NULL AS has_profiles,
         pg_catalog.to_regclass('{version_table}') IS NOT NULL AS has_versions,
         pg_catalog.to_regclass('ghostsync.objects') IS NOT NULL AS has_register,
         pg_catalog.to_regclass('ghostsync.sync_failures') IS NOT NULL AS has_failures,
         pg_catalog.to_regclass('public.cleanup_audit_log') IS NOT NULL AS has_audit,
         pg_catalog.pg_is_in_recovery() AS standby
),
version_rows AS MATERIALIZED (
  SELECT CASE WHEN e.has_auth AND e.has_profiles AND e.has_versions THEN {versions} ELSE '[]'::jsonb END AS v
  FROM env AS e
),
direct AS MATERIALIZED (
  SELECT ARRAY(SELECT r.v FROM pg_catalog.jsonb_array_elements_text(vr.v) WITH ORDINALITY AS r(v, n)
               WHERE r.v IN (SELECT pg_catalog.jsonb_array_elements_text(d.d -> 'members')) ORDER BY r.n) AS ours,
         -- no row of the branch: the newest revision of it that a host's row holds through depends_on
         ARRAY(SELECT m.v FROM pg_catalog.jsonb_array_elements_text(d.d -> 'members') WITH ORDINALITY AS m(v, n)
               WHERE m.v IN (SELECT d.d -> 'holds' ->> r.v FROM pg_catalog.jsonb_array_elements_text(vr.v) AS r(v))
               ORDER BY m.n DESC LIMIT 1) AS held,
         ARRAY(SELECT r.v FROM pg_catalog.jsonb_array_elements_text(vr.v) WITH ORDINALITY AS r(v, n)
               WHERE r.v LIKE 'ghostsync\_%' ORDER BY r.n) AS prefixed
  FROM version_rows AS vr, decl AS d
),
ours AS MATERIALIZED (
  SELECT CASE WHEN pg_catalog.cardinality(x.ours) > 0 THEN x.ours ELSE x.held END AS ours, x.prefixed
  FROM direct AS x
),
state AS MATERIALIZED (
  SELECT e.*, d.d ->> 'head' AS head, d.d -> 'bodies' AS bodies,
    CASE
      WHEN NOT e.has_auth THEN pg_catalog.jsonb_build_object('code', 'no_auth_schema', 'message',
        'no auth.users in this database: is DATABASE_URL a Supabase database?')
      WHEN NOT e.has_profiles THEN pg_catalog.jsonb_build_object('code', 'not_installed', 'message',
        'public.users does not exist: ghostsync is not installed; ' || (d.d -> 'advice' ->> 'install'))
      WHEN pg_catalog.cardinality(o.ours) > 1 THEN pg_catalog.jsonb_build_object('code', 'revision_unknown',
        'message', pg_catalog.format('alembic_version holds %s rows of ghostsync''s branch (%s): merge the heads '
        'and upgrade', pg_catalog.cardinality(o.ours), pg_catalog.array_to_string(o.ours, ', ')))
      WHEN pg_catalog.cardinality(o.ours) = 0 AND pg_catalog.cardinality(o.prefixed) > 0 THEN
        pg_catalog.jsonb_build_object('code', 'revision_unknown', 'message', pg_catalog.format(
        'the database is at revision %s, which this ghostsync does not know: upgrade ghostsync (or point '
        '--alembic-config at the configuration that knows it)', o.prefixed[1]))
      WHEN pg_catalog.cardinality(o.ours) = 0 THEN pg_catalog.jsonb_build_object('code', 'not_installed', 'message',
        'ghostsync is not installed here (no revision of its branch in alembic_version): '
        || (d.d -> 'advice' ->> 'install'))
    END AS error,
    o.ours[1] AS recorded
  FROM env AS e, ours AS o, decl AS d
),
status AS MATERIALIZED (
  SELECT s.*, CASE WHEN s.error IS NULL THEN s.recorded END AS revision,
         d.d -> 'revisions' -> coalesce(CASE WHEN s.error IS NULL THEN s.recorded END, '') AS declared
  FROM state AS s, decl AS d
),
registered AS MATERIALIZED (
  SELECT CASE WHEN s.error IS NULL AND s.has_register THEN {registered} ELSE '{{}}'::jsonb END AS r
  FROM status AS s
),
counts AS MATERIALIZED (
  SELECT CASE WHEN s.error IS NULL THEN {counts} END AS c FROM status AS s
),
failures AS MATERIALIZED (
  SELECT CASE WHEN s.error IS NULL AND s.has_failures THEN {failures} END AS f FROM status AS s
),
jobs AS MATERIALIZED (
  SELECT CASE WHEN s.error IS NULL AND s.has_audit THEN {jobs}
              WHEN s.error IS NULL THEN (SELECT pg_catalog.jsonb_object_agg(j.job, 'null'::jsonb)
                                         FROM pg_catalog.jsonb_array_elements_text(s.declared -> 'jobs') AS j(job))
         END AS j
  FROM status AS s
),
trigger_rows AS MATERIALIZED (
  -- evaluated left to right: the search path is '' while the names and the definition are read
  SELECT pg_catalog.left(pg_catalog.set_config('ghostsync.verify_search_path',
           pg_catalog.current_setting('search_path'), true)
           || pg_catalog.set_config('search_path', '', true), 0) AS enter,
         t.tgname::text AS name, c.oid::pg_catalog.regclass::text AS table_name, t.tgenabled::text AS enabled,
         p.oid::pg_catalog.regprocedure::text AS function, pg_catalog.pg_get_triggerdef(t.oid) AS definition,
         pg_catalog.left(pg_catalog.set_config('search_path',
           pg_catalog.current_setting('ghostsync.verify_search_path'), true), 0) AS leave
  FROM pg_catalog.pg_trigger AS t
  JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
  WHERE t.tgrelid IN (pg_catalog.to_regclass('auth.users'), pg_catalog.to_regclass('public.users'))
    AND NOT t.tgisinternal
),
triggers AS MATERIALIZED (
  SELECT x.n, x.t ->> 0 AS name, x.t ->> 1 AS tbl, x.t ->> 3 AS advice, r.function,
    CASE WHEN r.name IS NULL THEN 'missing'
         WHEN NOT (g.r ? ('trigger ' || (x.t ->> 0) || ' ON ' || (x.t ->> 1))) THEN 'not_ghostsyncs'
         ELSE {firing_r} END AS state,
    CASE WHEN r.name IS NULL OR NOT (g.r ? ('trigger ' || (x.t ->> 0) || ' ON ' || (x.t ->> 1))) THEN false
         ELSE r.definition = x.t ->> 2 END AS matches
  FROM status AS s
  CROSS JOIN registered AS g
  CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(s.declared -> 'triggers') WITH ORDINALITY AS x(t, n)
  LEFT JOIN trigger_rows AS r ON r.name = x.t ->> 0 AND r.table_name = x.t ->> 1
  WHERE s.error IS NULL
),
function_rows AS MATERIALIZED (
  SELECT x.n, x.f ->> 0 AS signature, x.f ->> 2 AS advice, s.bodies ->> ((x.f ->> 1)::int) AS body,
         g.r -> ('function ' || (x.f ->> 0)) AS record, p.*
  FROM status AS s
  CROSS JOIN registered AS g
  CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(s.declared -> 'functions') WITH ORDINALITY AS x(f, n)
  LEFT JOIN LATERAL (
    SELECT true AS present, p.prosrc, p.prosecdef, p.proconfig, pg_catalog.pg_get_userbyid(p.proowner)::text AS owner,
           pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
           ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles AS r
                 WHERE r.rolname IN ('anon', 'authenticated')
                   AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE') ORDER BY r.rolname) AS api_execute
    FROM pg_catalog.pg_proc AS p WHERE p.oid = pg_catalog.to_regprocedure(x.f ->> 0)
  ) AS p ON true
  WHERE s.error IS NULL
),
functions AS MATERIALIZED (
  SELECT f.n, f.signature, f.advice,
    CASE WHEN f.present IS NULL THEN 'missing'
         WHEN f.record IS NULL THEN 'not_ghostsyncs'
         WHEN pg_catalog.cardinality(f.differences) > 0 THEN 'differs'
         ELSE 'matches' END AS state,
    CASE WHEN f.present IS NULL THEN ARRAY[]::text[]
         WHEN f.record IS NULL THEN ARRAY['not recorded in ghostsync.objects']
         ELSE f.differences END AS differences
  FROM (
    SELECT fr.*, pg_catalog.array_remove(ARRAY[
        CASE WHEN fr.prosrc IS DISTINCT FROM fr.body THEN 'text' END,
        CASE WHEN NOT fr.prosecdef THEN 'not SECURITY DEFINER' END,
        CASE WHEN coalesce(fr.proconfig, ARRAY[]::text[]) <> ARRAY['search_path=""'] THEN
          'search_path not pinned to ''''' END,
        CASE WHEN fr.owner IS DISTINCT FROM (fr.record ->> 'owner') THEN
          pg_catalog.format('owner %s (installed by %s)', fr.owner, fr.record ->> 'owner') END,
        CASE WHEN fr.public_execute THEN 'EXECUTE granted to PUBLIC' END
      ], NULL) || ARRAY(SELECT 'EXECUTE granted to ' || a FROM pg_catalog.unnest(fr.api_execute) AS a) AS differences
    FROM function_rows AS fr
  ) AS f
),
tables AS MATERIALIZED (
  SELECT t.n, t.name, c.oid IS NOT NULL AS present, g.r -> ('table ' || t.name) -> 'created' AS created,
    coalesce(c.relrowsecurity, false) AS rls,
    CASE WHEN c.oid IS NULL THEN ARRAY[]::text[] ELSE
      ARRAY(SELECT pg_catalog.split_part(a.grant_, ' ', 2) || ' to ' || pg_catalog.split_part(a.grant_, ' ', 1)
            FROM pg_catalog.unnest(ARRAY(
              SELECT DISTINCT r.rolname || ' ' || x.privilege_type
              FROM pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) AS x
              JOIN pg_catalog.pg_roles AS r ON r.oid = x.grantee
              WHERE r.rolname IN ('anon', 'authenticated') ORDER BY 1)) WITH ORDINALITY AS a(grant_, k)
            WHERE t.name <> 'public.users' OR pg_catalog.split_part(a.grant_, ' ', 1) = 'anon'
               OR pg_catalog.split_part(a.grant_, ' ', 2) IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')
            ORDER BY a.k)
      || ARRAY(SELECT pg_catalog.split_part(a.grant_, ' ', 2) || ' on its sequence to '
                      || pg_catalog.split_part(a.grant_, ' ', 1)
               FROM pg_catalog.unnest(ARRAY(
                 SELECT DISTINCT r.rolname || ' ' || x.privilege_type
                 FROM pg_catalog.pg_depend AS d
                 JOIN pg_catalog.pg_class AS q ON q.oid = d.objid AND q.relkind = 'S'
                 CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(q.relacl, pg_catalog.acldefault('s', q.relowner)))
                   AS x
                 JOIN pg_catalog.pg_roles AS r ON r.oid = x.grantee
                 WHERE d.refobjid = c.oid AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND r.rolname IN ('anon', 'authenticated') ORDER BY 1)) WITH ORDINALITY AS a(grant_, k)
               ORDER BY a.k)
    END AS open_privileges
  FROM status AS s
  CROSS JOIN registered AS g
  CROSS JOIN (VALUES (1, 'public.users'), (2, 'public.cleanup_audit_log'), (3, 'ghostsync.sync_failures'))
    AS t(n, name)
  LEFT JOIN pg_catalog.pg_class AS c ON c.oid = pg_catalog.to_regclass(t.name)
  WHERE s.error IS NULL
),
columns AS MATERIALIZED (
  SELECT x.n, x.c ->> 0 AS name, (x.c ->> 1)::int AS max_length, (x.c ->> 2)::boolean AS nullable, a.*
  FROM status AS s
  CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(s.declared -> 'columns') WITH ORDINALITY AS x(c, n)
  LEFT JOIN LATERAL (
    SELECT true AS present,
           pg_catalog.regexp_replace(pg_catalog.format_type(a.atttypid, NULL), '^.*\.', '') AS type_name,
           CASE WHEN a.atttypid IN ('pg_catalog.varchar'::pg_catalog.regtype, 'pg_catalog.bpchar'::pg_catalog.regtype)
                     AND a.atttypmod > 4 THEN a.atttypmod - 4 END AS length,
           a.attnotnull
    FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = pg_catalog.to_regclass('public.users') AND a.attname = x.c ->> 0
      AND a.attnum > 0 AND NOT a.attisdropped
  ) AS a ON true
  WHERE s.error IS NULL AND s.revision IS NOT NULL
),
findings AS (
  SELECT 'problem' AS kind, 2 AS k1, 0::bigint AS k2, 0 AS k3, 'ghosts' AS code,
    pg_catalog.format('%s auth user(s) have no profile (ghosts): run `ghostsync repair`', c.c ->> 'ghosts')
      AS message
  FROM counts AS c WHERE (c.c ->> 'ghosts')::bigint > 0
  UNION ALL
  SELECT 'problem', 3, 0, 0, 'orphans',
    pg_catalog.format('%s profile(s) have no auth user (orphans): run `ghostsync repair`', c.c ->> 'orphans')
  FROM counts AS c WHERE (c.c ->> 'orphans')::bigint > 0
  UNION ALL
  SELECT 'problem', 4, 0, 0, 'failed_syncs',
    pg_catalog.format('%s profile write(s) failed and are recorded in ghostsync.sync_failures: fix the cause, '
                      'then run `ghostsync repair`', f.f ->> 'rows')
  FROM failures AS f WHERE (f.f ->> 'rows')::bigint > 0
  UNION ALL
  SELECT 'problem', 5, 0, 0, 'stale_profiles',
    pg_catalog.format('%s profile(s) disagree with auth.users on %s (stale): run `ghostsync repair`',
                      c.c ->> 'stale', s.declared ->> 'synced')
  FROM counts AS c, status AS s WHERE (c.c ->> 'stale')::bigint > 0
  UNION ALL
  SELECT 'problem', 6, t.n, 1, 'trigger_missing',
    pg_catalog.format('trigger %s on %s is missing: %s', t.name, t.tbl, t.advice)
  FROM triggers AS t WHERE t.state = 'missing'
  UNION ALL
  SELECT 'problem', 6, t.n, 1, 'trigger_not_ghostsyncs',
    pg_catalog.format('trigger %s on %s was not created by ghostsync (not in ghostsync.objects): a trigger of that '
                      'name replaced ghostsync''s', t.name, t.tbl)
  FROM triggers AS t WHERE t.state = 'not_ghostsyncs'
  UNION ALL
  SELECT 'problem', 6, t.n, 2, 'trigger_disabled',
    pg_catalog.format('trigger %s on %s is disabled: ALTER TABLE %s ENABLE TRIGGER %s (as the table''s owner), '
                      'then `ghostsync repair` for the writes it missed', t.name, t.tbl, t.tbl, t.name)
  FROM triggers AS t WHERE t.state = 'disabled'
  UNION ALL
  SELECT 'problem', 6, t.n, 2, 'trigger_replica_only',
    pg_catalog.format('trigger %s on %s fires only in replica mode (ENABLE REPLICA), so never for the auth '
                      'service: ALTER TABLE %s ENABLE TRIGGER %s, then `ghostsync repair`', t.name, t.tbl, t.tbl,
                      t.name)
  FROM triggers AS t WHERE t.state = 'replica_only'
  UNION ALL
  SELECT 'problem', 6, t.n, 3, 'trigger_drift',
    pg_catalog.format('trigger %s on %s differs from what revision %s declares (edited by hand?): %s', t.name,
                      t.tbl, s.revision, t.advice)
  FROM triggers AS t, status AS s WHERE t.state NOT IN ('missing', 'not_ghostsyncs') AND NOT t.matches
  UNION ALL
  SELECT 'problem', 7, f.n, 1, 'function_missing',
    pg_catalog.format('function %s is missing: %s', f.signature, f.advice)
  FROM functions AS f WHERE f.state = 'missing'
  UNION ALL
  SELECT 'problem', 7, f.n, 1, 'function_not_ghostsyncs',
    pg_catalog.format('function %s was not created by ghostsync (not in ghostsync.objects)', f.signature)
  FROM functions AS f WHERE f.state = 'not_ghostsyncs'
  UNION ALL
  SELECT 'problem', 7, f.n, 1, 'function_drift',
    pg_catalog.format('function %s differs from what revision %s declares (%s): %s', f.signature, s.revision,
                      pg_catalog.array_to_string(f.differences, '; '), f.advice)
  FROM functions AS f, status AS s WHERE f.state = 'differs'
  UNION ALL
  SELECT CASE WHEN t.created = 'true'::jsonb THEN 'problem' ELSE 'warning' END, 8, t.n, 1, 'rls_disabled',
    t.name || ' has row level security disabled: anyone with the anon key can read every row'
      || CASE WHEN t.created = 'true'::jsonb THEN '' ELSE ' (an adopted table: the app''s decision)' END
  FROM tables AS t WHERE t.present AND NOT t.rls AND t.name IN ('public.users', 'public.cleanup_audit_log')
  UNION ALL
  SELECT CASE WHEN t.created = 'true'::jsonb THEN 'problem' ELSE 'warning' END, 8, t.n, 2, 'open_privileges',
    t.name || ' grants ' || pg_catalog.array_to_string(t.open_privileges, ', ')
      || ' to end users'' roles (row level security governs neither TRUNCATE, REFERENCES nor TRIGGER, and anon '
      || 'has no business with ghostsync''s tables)'
      || CASE WHEN t.created = 'true'::jsonb THEN '' ELSE '; an adopted table: revoke what end users do not need'
         END
  FROM tables AS t WHERE t.present AND pg_catalog.cardinality(t.open_privileges) > 0
  UNION ALL
  SELECT 'problem', 9, c.n, 0, 'profile_table_incompatible',
    'public.users cannot take what the sync writes: ' || CASE
      WHEN c.present IS NULL THEN pg_catalog.format('column %s is missing', c.name)
      WHEN c.length IS NOT NULL AND c.max_length IS NOT NULL AND c.length < c.max_length THEN
        pg_catalog.format('column %s is %s(%s), the sync writes up to %s characters', c.name, c.type_name,
                          c.length, c.max_length)
      ELSE pg_catalog.format('column %s is NOT NULL, the sync writes NULL for some users', c.name) END
  FROM columns AS c
  WHERE c.present IS NULL OR (c.length IS NOT NULL AND c.max_length IS NOT NULL AND c.length < c.max_length)
     OR (c.attnotnull AND c.nullable)
  UNION ALL
  SELECT 'warning', 10, 0, 0, 'behind_head',
    pg_catalog.format('the database is at revision %s, head is %s: %s', s.revision, s.head,
                      d.d -> 'advice' ->> 'newer')
  FROM status AS s, decl AS d WHERE s.revision IS NOT NULL AND s.head IS NOT NULL AND s.revision <> s.head
  UNION ALL
  SELECT 'warning', 11, j.n, 0, 'job_' || (j.run ->> 'status'),
    pg_catalog.format('the last %s run ended %s (audit row %s)', j.job, j.run ->> 'status', j.run ->> 'id')
  FROM (SELECT x.job, x.n, jb.j -> x.job AS run
        FROM status AS s, jobs AS jb,
             pg_catalog.jsonb_array_elements_text(s.declared -> 'jobs') WITH ORDINALITY AS x(job, n)) AS j
  WHERE j.run ->> 'status' IN ('failed', 'interrupted')
)
SELECT
  2 AS schema_version,
  s.error IS NULL AS up,
  'full'::text AS "check",
  s.error IS NULL AND NOT EXISTS (SELECT 1 FROM findings AS f WHERE f.kind = 'problem') AS healthy,
  s.revision,
  CASE WHEN s.error IS NULL THEN s.head END AS head,
  CASE WHEN s.error IS NULL THEN coalesce(s.revision = s.head, false) END AS at_head,
  CASE WHEN s.error IS NULL THEN s.standby END AS standby,
  (c.c ->> 'ghosts')::bigint AS ghosts,
  (c.c ->> 'orphans')::bigint AS orphans,
  (c.c ->> 'stale')::bigint AS stale_profiles,
  (fl.f ->> 'rows')::bigint AS failed_syncs,
  (c.c ->> 'auth_users')::bigint AS auth_users,
  (c.c ->> 'profiles')::bigint AS profiles,
  CASE WHEN s.error IS NULL THEN coalesce((
    SELECT pg_catalog.jsonb_object_agg(t.name, pg_catalog.jsonb_build_object(
      'state', t.state, 'matches', t.matches, 'table', t.tbl, 'function', t.function))
    FROM triggers AS t), '{{}}') END AS triggers,
  CASE WHEN s.error IS NULL THEN coalesce((
    SELECT pg_catalog.jsonb_object_agg(f.signature, pg_catalog.jsonb_build_object(
      'state', f.state, 'differences', pg_catalog.to_jsonb(f.differences)))
    FROM functions AS f), '{{}}') END AS functions,
  CASE WHEN s.error IS NULL THEN coalesce((
    SELECT pg_catalog.jsonb_object_agg(r.name || ' ON ' || r.table_name, pg_catalog.jsonb_build_object(
      'table', r.table_name, 'function', r.function, 'state', {firing_r}))
    FROM trigger_rows AS r, registered AS g
    WHERE NOT (g.r ? ('trigger ' || r.name || ' ON ' || r.table_name))), '{{}}') END AS app_triggers,
  CASE WHEN s.error IS NULL THEN (
    SELECT pg_catalog.jsonb_object_agg(t.name, pg_catalog.jsonb_build_object(
      'exists', t.present, 'created_by_ghostsync', t.created, 'rls', t.rls,
      'open_privileges', pg_catalog.to_jsonb(t.open_privileges)))
    FROM tables AS t) END AS tables,
  jb.j AS jobs,
  CASE WHEN s.error IS NULL THEN pg_catalog.jsonb_build_object(
    'failed_profile_writes', CASE WHEN NOT s.standby THEN (
      SELECT st.n_tup_ins + st.n_tup_upd FROM pg_catalog.pg_stat_user_tables AS st
      WHERE st.relid = pg_catalog.to_regclass('ghostsync.sync_failures')) END,
    'auth_users_inserted', CASE WHEN NOT s.standby THEN (SELECT st.n_tup_ins FROM pg_catalog.pg_stat_user_tables AS st
                                WHERE st.relid = pg_catalog.to_regclass('auth.users')) END,
    'auth_users_deleted', CASE WHEN NOT s.standby THEN (SELECT st.n_tup_del FROM pg_catalog.pg_stat_user_tables AS st
                               WHERE st.relid = pg_catalog.to_regclass('auth.users')) END,
    'profiles_inserted', CASE WHEN NOT s.standby THEN (SELECT st.n_tup_ins FROM pg_catalog.pg_stat_user_tables AS st
                              WHERE st.relid = pg_catalog.to_regclass('public.users')) END,
    'track_functions', CASE WHEN NOT s.standby THEN pg_catalog.current_setting('track_functions') END,
    'trigger_calls', CASE WHEN NOT s.standby AND pg_catalog.current_setting('track_functions') IN ('pl', 'all') THEN
      (SELECT coalesce(sum(fs.calls), 0) FROM pg_catalog.pg_stat_user_functions AS fs
       WHERE fs.schemaname = 'ghostsync') END,
    'trigger_seconds', CASE WHEN NOT s.standby AND pg_catalog.current_setting('track_functions') IN ('pl', 'all')
      THEN (SELECT (coalesce(sum(fs.total_time), 0) / 1000.0)::float8 FROM pg_catalog.pg_stat_user_functions AS fs
            WHERE fs.schemaname = 'ghostsync') END) END AS counters,
  CASE WHEN s.error IS NULL THEN coalesce((
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('code', f.code, 'message', f.message)
                                ORDER BY f.k1, f.k2, f.k3)
    FROM findings AS f WHERE f.kind = 'problem'), '[]') END AS problems,
  CASE WHEN s.error IS NULL THEN coalesce((
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('code', f.code, 'message', f.message)
                                ORDER BY f.k1, f.k2, f.k3)
    FROM findings AS f WHERE f.kind = 'warning'), '[]') END AS warnings,
  s.error
FROM status AS s, counts AS c, failures AS fl, jobs AS jb;
"""

VERSIONS = ("'SELECT coalesce(pg_catalog.jsonb_agg(v.version_num::text ORDER BY v.version_num), ''[]'')::text AS j "
            "FROM {table} AS v'")
REGISTERED = ("'SELECT coalesce(pg_catalog.jsonb_object_agg(o.kind || '' '' || o.name, pg_catalog.jsonb_build_object("
              "''created'', o.created, ''owner'', o.owner::text)), ''{}'')::text AS j FROM ghostsync.objects AS o'")
FAILURES = "'SELECT pg_catalog.jsonb_build_object(''rows'', count(*))::text AS j FROM ghostsync.sync_failures AS f'"
JOBS = ("'SELECT coalesce(pg_catalog.jsonb_object_agg(j.job, (SELECT pg_catalog.jsonb_build_object(''id'', l.id, "
        "''status'', l.status, ''records_affected'', l.records_affected, ''started_at'', " + _iso("l.started_at")
        + ", ''finished_at'', " + _iso("l.finished_at") + ") FROM public.cleanup_audit_log AS l "
        "WHERE l.job_name = j.job AND l.status <> ''dry_run'' ORDER BY l.id DESC LIMIT 1)), ''{}'')::text AS j "
        "FROM pg_catalog.jsonb_array_elements_text(' || pg_catalog.quote_literal((s.declared -> 'jobs')::text) "
        "|| '::jsonb) AS j(job)'")

HEADER = """-- ghostsync verification script (ghostsync {version}; written by `ghostsync verify-sql` and
-- `ghostsync export-supabase`). Read-only: run it after `supabase db push`, in the SQL editor
-- or with `psql "$DATABASE_URL" -x -f verify-trigger.sql`.
--
-- One row, the keys of `ghostsync status --json`: healthy (no problem found), revision, head,
-- ghosts, orphans, stale_profiles, failed_syncs, each trigger's state, whether each function
-- matches what the revision the database is at declares, problems and warnings (code and
-- message; a warning such as behind_head leaves it healthy). up = false: it could not check,
-- and error says why.
--
-- It carries what each revision of ghostsync's branch declares ({members}),
-- so it needs no Python: re-export it when ghostsync is upgraded.
"""


def script(config: str | Path | None = None, road: roads.Road = roads.SUPABASE_CLI,
           version_table: str = names.VERSION_TABLE) -> str:
    """The verification script for the chain of ``config`` (default: ghostsync's own), reading
    ``version_table`` (a host's, as ``export.version_table_of`` finds it); its advice names the commands
    of ``road`` (default: the Supabase CLI's, the road of teams that run no Python)."""
    declared = declarations(config, road)
    payload = embedded(declared)
    return HEADER.format(version=__version__, members=", ".join(declared["members"])) + QUERY.format(
        declared=payload, versions=_dynamic(VERSIONS.format(table=version_table)), registered=_dynamic(REGISTERED),
        counts=_dynamic("s.declared ->> 'counts'"), failures=_dynamic(FAILURES), jobs=_dynamic(JOBS),
        firing_r=FIRING, version_table=version_table,
    )


__all__ = ["COLUMNS", "counts_sql", "declarations", "embedded", "script"]
