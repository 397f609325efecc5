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

Its findings are rendered from the catalogue (``ghostsync.findings``): each code, severity and
message template once, each one SELECT of the ``findings`` CTE (``_findings_sql``), ordered by
the catalogue's ranks as ``status`` orders them. The checks beyond the catalogs' drift run the
queries ``status`` runs: ``replication_role.QUERY``, ``exposure.query``, ``health.failed_syncs_sql``
and ``stamped.later_objects`` (embedded per revision).

Where status cannot check (no auth.users, no public.users, no revision of ghostsync's
branch in alembic_version, an unknown or doubled revision row), the row has ``up``
false, ``healthy`` false and ``error`` = {code, message}, as ``status --json`` prints
then; its other columns are null.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghostsync import (
    __version__,
    adoption_checks,
    app_triggers,
    chain,
    delete_rules,
    drift,
    exposure,
    findings,
    health,
    names,
    replication_role,
    roads,
    stamped,
)
from ghostsync.chain import Declared

# The columns of the row, in the order of Status.as_dict().
COLUMNS = ("schema_version", "up", "check", "healthy", "revision", "head", "at_head", "standby", "ghosts",
           "orphans", "stale_profiles", "failed_syncs", "auth_users", "profiles", "triggers", "functions",
           "app_triggers", "tables", "jobs", "counters", "problems", "warnings", "error")


def counts_sql(declared: Declared) -> str:
    """``health.full_counts`` for ``declared``, as one row with one text column ``j`` (jsonb)."""
    return f"SELECT pg_catalog.to_jsonb(c)::text AS j FROM ({health.full_counts_sql(declared)}) AS c"


def failures_sql(declared: Declared) -> str:
    """``health.failed_syncs_sql`` for ``declared``, as one row with one text column ``j`` (jsonb)."""
    return f"SELECT pg_catalog.to_jsonb(c)::text AS j FROM ({health.failed_syncs_sql(declared)}) AS c"


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
                           status.reinstall_advice(declared, signature, revision, script, road),
                           drift.attributes(function.create).as_list()]
                          for signature, function in declared.functions.items()],
            "triggers": [[name, trigger.table, trigger.definition,
                          status.reinstall_advice(declared, name, revision, script, road)]
                         for name, trigger in declared.triggers.items()],
            "columns": [[c.name, c.max_length, c.nullable] for c in declared.columns.values()],
            "synced": ", ".join(c.name for c in declared.synced_columns),
            "written": list(declared.columns),
            "failures": failures_sql(declared),
            "later": [[o["later"], o["kind"], o["name"], o["table"], body_index(o["text"]), o["label"]]
                      for o in stamped.later_objects(revision, script)],
            "jobs": status.monitored_jobs(declared),
            "counts": counts_sql(declared),
            "delete_rules": delete_rules.applies(declared),
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
      WHEN NOT e.has_auth THEN {error_no_auth}
      WHEN NOT e.has_profiles THEN {error_not_installed}
      WHEN pg_catalog.cardinality(o.ours) > 1 THEN {error_rows}
      WHEN pg_catalog.cardinality(o.ours) = 0 AND pg_catalog.cardinality(o.prefixed) > 0 THEN {error_unknown}
      WHEN pg_catalog.cardinality(o.ours) = 0 THEN {error_not_recorded}
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
skipping AS MATERIALIZED (
  -- settings of the auth role or the database that make its writes skip ghostsync's triggers
  SELECT x.v AS setting, x.n
  FROM status AS s
  CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(({replication})::jsonb) WITH ORDINALITY AS x(v, n)
  WHERE s.error IS NULL
),
keyed AS MATERIALIZED (
  -- the profile table's key on id to auth.users, where the revision keeps the app's delete rules
  SELECT k.* FROM status AS s CROSS JOIN registered AS g CROSS JOIN LATERAL ({key_on_id}) AS k
  WHERE s.error IS NULL AND coalesce((s.declared ->> 'delete_rules')::boolean, false)
),
orphan_rows AS MATERIALIZED (
  -- an adopted table without a key on id keeps the app's rows: counted as kept, not as orphans
  SELECT (c.c ->> 'orphans')::bigint AS counted,
         EXISTS (SELECT 1 FROM keyed AS k WHERE NOT k.created AND k.conname IS NULL) AS keeps
  FROM counts AS c
),
uncreatable AS MATERIALIZED (
  SELECT CASE WHEN s.error IS NULL AND s.has_failures THEN {uncreatable} END AS u FROM status AS s
),
exposed AS MATERIALIZED (
  SELECT CASE WHEN s.error IS NULL THEN ({exposure})::jsonb END AS e FROM status AS s
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
stamp_rows AS MATERIALIZED (
  -- what a later revision installs and the database holds (ghostsync.stamped)
  SELECT x.n, x.o ->> 0 AS later, x.o ->> 5 AS label
  FROM status AS s
  CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(s.declared -> 'later') WITH ORDINALITY AS x(o, n)
  WHERE s.error IS NULL AND CASE WHEN x.o ->> 1 = 'function' THEN
      (SELECT p.prosrc FROM pg_catalog.pg_proc AS p WHERE p.oid = pg_catalog.to_regprocedure(x.o ->> 2))
        IS NOT DISTINCT FROM s.bodies ->> ((x.o ->> 4)::int)
    ELSE EXISTS (SELECT 1 FROM trigger_rows AS r WHERE r.name = x.o ->> 2 AND r.table_name = x.o ->> 3
                   AND r.definition = s.bodies ->> ((x.o ->> 4)::int)) END
),
stamped AS MATERIALIZED (
  SELECT r.later, pg_catalog.string_agg(r.label, ', ' ORDER BY r.n) AS objects
  FROM stamp_rows AS r WHERE r.later = (SELECT l.later FROM stamp_rows AS l ORDER BY l.n DESC LIMIT 1)
  GROUP BY r.later
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
         x.f -> 3 AS attributes,
         g.r -> ('function ' || (x.f ->> 0)) AS record, p.*
  FROM status AS s
  CROSS JOIN registered AS g
  CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(s.declared -> 'functions') WITH ORDINALITY AS x(f, n)
  LEFT JOIN LATERAL (
    SELECT true AS present, p.prosrc, p.prosecdef, p.proconfig, pg_catalog.pg_get_userbyid(p.proowner)::text AS owner,
           p.provolatile, p.proisstrict,
           (SELECT l.lanname FROM pg_catalog.pg_language AS l WHERE l.oid = p.prolang) AS lanname,
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
        CASE WHEN fr.prosrc IS DISTINCT FROM fr.body THEN 'text' END], NULL)
      || {attribute_differences} || pg_catalog.array_remove(ARRAY[
        CASE WHEN NOT fr.prosecdef THEN 'not SECURITY DEFINER' END,
        CASE WHEN NOT {search_path_pinned} THEN 'search_path not pinned to ''''' END,
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
{findings}
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
  CASE WHEN o.keeps AND o.counted IS NOT NULL THEN 0 ELSE o.counted END AS orphans,
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
FROM status AS s, counts AS c, orphan_rows AS o, failures AS fl, jobs AS jb;
"""

VERSIONS = ("'SELECT coalesce(pg_catalog.jsonb_agg(v.version_num::text ORDER BY v.version_num), ''[]'')::text AS j "
            "FROM {table} AS v'")
REGISTERED = ("'SELECT coalesce(pg_catalog.jsonb_object_agg(o.kind || '' '' || o.name, pg_catalog.jsonb_build_object("
              "''created'', o.created, ''owner'', o.owner::text)), ''{}'')::text AS j FROM ghostsync.objects AS o'")
JOBS = ("'SELECT coalesce(pg_catalog.jsonb_object_agg(j.job, (SELECT pg_catalog.jsonb_build_object(''id'', l.id, "
        "''status'', l.status, ''records_affected'', l.records_affected, ''started_at'', " + _iso("l.started_at")
        + ", ''finished_at'', " + _iso("l.finished_at") + ") FROM public.cleanup_audit_log AS l "
        "WHERE l.job_name = j.job AND l.status <> ''dry_run'' ORDER BY l.id DESC LIMIT 1)), ''{}'')::text AS j "
        "FROM pg_catalog.jsonb_array_elements_text(' || pg_catalog.quote_literal((s.declared -> 'jobs')::text) "
        "|| '::jsonb) AS j(job)'")

def _finding(code: findings.Code, source: str, order: str = "0", table: str | None = None,
             adopted: str = "false", **fields: str) -> str:
    """One SELECT of the findings CTE: ``code``'s severity, rank, code and message (``fields``: each template
    field as an SQL expression over ``source``, a FROM clause; ``order``: the object's position)."""
    if table is not None:
        fields["table"] = table
        if code.severity == findings.BY_TABLE:
            fields["whose"] = code.sql_whose(table, adopted)
    kind = code.sql_severity(table, adopted) if table is not None else code.sql_severity()
    return (f"  SELECT {kind} AS kind, {code.rank[0]} AS k1, ({order})::bigint AS k2, {code.rank[1]} AS k3, "
            f"{code.sql_code} AS code,\n    {code.sql_message(**fields)} AS message\n  {source}")


# verify-sql's reading of the register (the registered CTE, g): whether ghostsync recorded trigger t
APP_TRIGGER_RECORDED = "(g.r ? ('trigger ' || t.tgname || ' ON auth.users'))"
# The profile table's key on id (delete_rules), ghostsync's creation of it read from the register
KEY_ON_ID = delete_rules.key_on_id_sql("coalesce((g.r -> 'table public.users' ->> 'created')::boolean, false)")
UNCREATABLE = _dynamic(findings.sql_literal(
    "SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(q.why, q.n) ORDER BY q.why COLLATE \"C\"), "
    "'[]')::text AS j FROM (" + adoption_checks.UNCREATABLE + ") AS q"))


def _app_trigger_rows(query: Callable[[str], str], *order: str) -> str:
    """The FROM clause of a finding over the app's triggers (``ghostsync.app_triggers``): ``query``'s rows,
    with the register read already, numbered in status's order (``order``: its columns, compared as "C")."""
    ordered = ", ".join(f'a.{column} COLLATE "C"' for column in order)
    return (f"FROM (SELECT a.*, pg_catalog.row_number() OVER (ORDER BY {ordered}) AS n FROM status AS s "
            f"CROSS JOIN registered AS g CROSS JOIN LATERAL ({query(APP_TRIGGER_RECORDED)}) AS a "
            "WHERE s.error IS NULL) AS a")


def _findings_sql() -> str:
    """The findings CTE, rendered from the catalogue in status's order (by k1, k2, k3)."""
    f = findings
    trigger = {"name": "t.name", "table": "t.tbl"}
    function = {"signature": "f.signature"}
    table_rows = "FROM tables AS t WHERE t.present"
    adopted = "t.created IS DISTINCT FROM 'true'::jsonb"  # not recorded as created by ghostsync
    parts = [
        _finding(f.GHOSTS, "FROM counts AS c WHERE (c.c ->> 'ghosts')::bigint > 0", count="c.c ->> 'ghosts'"),
        _finding(f.ORPHANS, "FROM orphan_rows AS o WHERE NOT o.keeps AND o.counted > 0", count="o.counted"),
        _finding(f.APP_ROWS_KEPT, "FROM orphan_rows AS o WHERE o.keeps AND o.counted > 0", count="o.counted"),
        _finding(f.APP_KEY_REFUSES_DELETES, "FROM keyed AS k WHERE k.conname IS NOT NULL AND k.action <> 'c'",
                 key="k.conname", on_delete="CASE k.action " + "".join(
                     f"WHEN {findings.sql_literal(a)} THEN {findings.sql_literal(n)} "
                     for a, n in delete_rules.ACTIONS.items()) + "END"),
        _finding(f.FAILED_SYNCS, "FROM failures AS f WHERE (f.f ->> 'rows')::bigint > 0", count="f.f ->> 'rows'"),
        _finding(f.STALE_PROFILES, "FROM counts AS c, status AS s WHERE (c.c ->> 'stale')::bigint > 0",
                 count="c.c ->> 'stale'", columns="s.declared ->> 'synced'"),
        _finding(f.AUTH_WRITES_SKIP_TRIGGERS, "FROM skipping AS k", "k.n", setting="k.setting ->> 'setting'",
                 value="k.setting ->> 'value'", reset="k.setting ->> 'reset'"),
        _finding(f.STAMPED_BEHIND, "FROM stamped AS m, status AS s", later="m.later", objects="m.objects",
                 revision="s.revision"),
        _finding(f.TRIGGER_MISSING, "FROM triggers AS t WHERE t.state = 'missing'", "t.n", advice="t.advice",
                 **trigger),
        _finding(f.TRIGGER_NOT_GHOSTSYNCS, "FROM triggers AS t WHERE t.state = 'not_ghostsyncs'", "t.n", **trigger),
        _finding(f.TRIGGER_DISABLED, "FROM triggers AS t WHERE t.state = 'disabled'", "t.n", **trigger),
        _finding(f.TRIGGER_REPLICA_ONLY, "FROM triggers AS t WHERE t.state = 'replica_only'", "t.n", **trigger),
        _finding(f.TRIGGER_DRIFT, "FROM triggers AS t, status AS s WHERE t.state NOT IN ('missing', 'not_ghostsyncs') "
                 "AND NOT t.matches", "t.n", revision="s.revision", advice="t.advice", **trigger),
        _finding(f.APP_TRIGGER_WRITES_PROFILES, _app_trigger_rows(app_triggers.query, "trigger"), "a.n",
                 trigger="a.trigger", function="a.function"),
        _finding(f.APP_KEY_CHECKED_BEFORE_PROFILE, _app_trigger_rows(app_triggers.keyed_query, "trigger",
                                                                     "referencing", "key"), "a.n",
                 trigger="a.trigger", function="a.function", referencing="a.referencing", key="a.key"),
        _finding(f.FUNCTION_MISSING, "FROM functions AS f WHERE f.state = 'missing'", "f.n", advice="f.advice",
                 **function),
        _finding(f.FUNCTION_NOT_GHOSTSYNCS, "FROM functions AS f WHERE f.state = 'not_ghostsyncs'", "f.n",
                 **function),
        _finding(f.FUNCTION_DRIFT, "FROM functions AS f, status AS s WHERE f.state = 'differs'", "f.n",
                 revision="s.revision", differences="pg_catalog.array_to_string(f.differences, '; ')",
                 advice="f.advice", **function),
        _finding(f.RLS_DISABLED, f"{table_rows} AND NOT t.rls AND t.name IN "
                 f"({findings.sql_literal(names.PROFILES)}, {findings.sql_literal(names.AUDIT_LOG)})", "t.n", "t.name",
                 adopted),
        _finding(f.OPEN_PRIVILEGES, f"{table_rows} AND pg_catalog.cardinality(t.open_privileges) > 0", "t.n", "t.name",
                 adopted, privileges="pg_catalog.array_to_string(t.open_privileges, ', ')"),
        _finding(f.SYNCED_COLUMNS_READABLE, "FROM tables AS t CROSS JOIN exposed AS x WHERE t.present AND x.e IS NOT "
                 f"NULL AND t.name = {findings.sql_literal(names.PROFILES)}", "t.n", "t.name",
                 roles="x.e ->> 'roles'", columns="x.e ->> 'columns'", because="x.e ->> 'because'",
                 close="x.e ->> 'close'"),
        # a synced column the table lacks is left out (SYNCED_COLUMNS_ABSENT), as status fits the declaration
        _finding(f.PROFILE_TABLE_INCOMPATIBLE, "FROM columns AS c WHERE c.present AND ((c.length IS NOT NULL "
                 "AND c.max_length IS NOT NULL AND c.length < c.max_length) OR (c.attnotnull AND c.nullable))", "c.n",
                 reason="CASE WHEN c.length IS NOT NULL AND c.max_length IS NOT NULL AND c.length < c.max_length THEN "
                 "pg_catalog.format('column %s is %s(%s), the sync writes up to %s characters', c.name, c.type_name, "
                 "c.length, c.max_length) ELSE pg_catalog.format('column %s is NOT NULL, the sync writes NULL for "
                 "some users', c.name) END"),
        _finding(f.PROFILE_CANNOT_BE_CREATED, "FROM uncreatable AS un CROSS JOIN LATERAL "
                 "pg_catalog.jsonb_array_elements(un.u) WITH ORDINALITY AS x(e, n)", "x.n", count="x.e ->> 1",
                 why="x.e ->> 0"),
        _finding(f.SYNCED_COLUMNS_ABSENT, "FROM (SELECT pg_catalog.string_agg(c.name, ', ' ORDER BY c.n) AS names "
                 "FROM columns AS c WHERE c.present IS NULL) AS m WHERE m.names IS NOT NULL", columns="m.names",
                 why=adoption_checks.absent_why()),
        _finding(f.BEHIND_HEAD, "FROM status AS s, decl AS d WHERE s.revision IS NOT NULL AND s.head IS NOT NULL "
                 "AND s.revision <> s.head", revision="s.revision", head="s.head", newer="d.d -> 'advice' ->> 'newer'"),
        *(_finding(code, "FROM (SELECT x.job, x.n, jb.j -> x.job AS run FROM status AS s, jobs AS jb, "
                   "pg_catalog.jsonb_array_elements_text(s.declared -> 'jobs') WITH ORDINALITY AS x(job, n)) AS j "
                   f"WHERE j.run ->> 'status' = {findings.sql_literal(ended)}", "j.n", job="j.job",
                   id="j.run ->> 'id'") for ended, code in findings.JOB_ENDED.items()),
    ]
    return "\n  UNION ALL\n".join(parts)


def _error(code: findings.Code, **fields: str) -> str:
    """The ``error`` column of a check that could not run: ``code``'s code and message."""
    return f"pg_catalog.jsonb_build_object('code', {code.sql_code}, 'message', {code.sql_message(**fields)})"


FINDINGS_SQL = _findings_sql()
_INSTALL = "d.d -> 'advice' ->> 'install'"
ERRORS_SQL = {
    "error_no_auth": _error(findings.NO_AUTH_SCHEMA),
    "error_not_installed": _error(findings.NOT_INSTALLED, install=_INSTALL),
    "error_rows": _error(findings.REVISION_ROWS, count="pg_catalog.cardinality(o.ours)",
                         rows="pg_catalog.array_to_string(o.ours, ', ')"),
    "error_unknown": _error(findings.REVISION_UNKNOWN, revision="o.prefixed[1]"),
    "error_not_recorded": _error(findings.NOT_RECORDED, install=_INSTALL),
}


HEADER = """-- ghostsync verification script (ghostsync {version}; written by `ghostsync verify-sql` and
-- `ghostsync export-supabase`). Read-only: run it after `supabase db push`, in the SQL editor
-- or with `psql "$DATABASE_URL" -x -f verify-trigger.sql`.
--
-- One row, the keys of `ghostsync status --json`: healthy (no problem found), revision, head,
-- ghosts, orphans, stale_profiles, failed_syncs, each trigger's state, whether each function
-- matches what the revision the database is at declares, problems and warnings (code and
-- message; a warning, such as being behind head, leaves it healthy). up = false: it could not check,
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
        counts=_dynamic("s.declared ->> 'counts'"), failures=_dynamic("s.declared ->> 'failures'"), jobs=_dynamic(JOBS),
        firing_r=FIRING, version_table=version_table, findings=FINDINGS_SQL, **ERRORS_SQL,
        key_on_id=KEY_ON_ID, uncreatable=UNCREATABLE,
        attribute_differences=drift.attribute_differences_sql("fr", "fr.attributes"),
        search_path_pinned=drift.search_path_pinned_sql("fr.proconfig"),
        replication=f"SELECT q.j FROM ({replication_role.QUERY}) AS q",
        exposure="SELECT q.j FROM (" + exposure.query(
            "ARRAY(SELECT pg_catalog.jsonb_array_elements_text(s.declared -> 'written'))") + ") AS q",
    )


__all__ = ["COLUMNS", "counts_sql", "declarations", "embedded", "script"]
