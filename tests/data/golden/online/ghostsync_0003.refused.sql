SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = pg_catalog.to_regclass('public.users') AND a.attnum > 0 AND NOT a.attisdropped;

SELECT CASE WHEN c.reltuples < 0 OR (c.reltuples = 0 AND c.relpages > 0)
            THEN (SELECT count(*) FROM auth.users) ELSE c.reltuples::bigint END
FROM pg_catalog.pg_class AS c WHERE c.oid = 'auth.users'::pg_catalog.regclass;

-- params: {'job': 'backfill_ghost_users', 'dead_after': 60.0}
UPDATE public.cleanup_audit_log AS l
SET status = 'interrupted',
    finished_at = now(),
    details = l.details || jsonb_build_object('error', 'the run ended without finishing')
WHERE l.job_name = %(job)s
  AND l.status = 'running'
  AND (
    NOT EXISTS (
      SELECT 1 FROM pg_stat_activity AS a
      WHERE a.pid = (l.details ->> 'pid')::int
        AND a.backend_start = (l.details ->> 'backend_start')::timestamptz
    )
    OR coalesce((l.details ->> 'heartbeat_at')::timestamptz, l.started_at)
       < clock_timestamp() - make_interval(secs => CAST(%(dead_after)s AS double precision))
  );

-- params: {'job': 'backfill_ghost_users', 'run_mode': 'online'}
INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
SELECT %(job)s, 'running', 0, clock_timestamp(),
       jsonb_build_object('mode', CAST(%(run_mode)s AS text), 'pid', pg_backend_pid(),
                          'backend_start', a.backend_start, 'batches', 0,
                          'heartbeat_at', clock_timestamp())
FROM pg_stat_activity AS a
WHERE a.pid = pg_backend_pid()
RETURNING id;

SELECT coalesce(string_agg(format('%%s %%s', kind, name), ', ' ORDER BY kind, name), '') FROM (  SELECT 'BEFORE INSERT trigger' AS kind, t.tgname::text AS name FROM pg_catalog.pg_trigger AS t  WHERE t.tgrelid = pg_catalog.to_regclass('public.users') AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')    AND (t.tgtype & 7) = 7  UNION ALL  SELECT 'rule', r.rulename::text FROM pg_catalog.pg_rewrite AS r  WHERE r.ev_class = pg_catalog.to_regclass('public.users') AND r.ev_type = '3' AND r.is_instead) AS s;

SELECT (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint %% 4294967296)::text AS horizon;

-- params: {'lock_timeout': '400ms', 'after': None, 'batch_size': 2, 'run_id': 1}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
ghosts AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
  FROM auth.users AS u
  WHERE u.id IN (SELECT b.id FROM batch AS b WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL)
  FOR KEY SHARE OF u
),
repaired AS (
  INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
  SELECT g.id, g.email, g.email_confirmed_at IS NOT NULL, coalesce(g.created_at, now()), coalesce(g.updated_at, g.created_at, now())
  FROM ghosts AS g
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object(
        'batches', coalesce((details ->> 'batches')::int, 0) + 1,
        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1),
        'heartbeat_at', clock_timestamp())
  WHERE id = %(run_id)s AND EXISTS (SELECT 1 FROM batch)
  RETURNING 1
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM repaired) AS repaired,
       (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM progress) AS logged;

-- params: {'lock_timeout': '400ms', 'after': UUID('00000000-0000-4000-8000-000000000002'), 'batch_size': 2, 'run_id': 1}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
ghosts AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
  FROM auth.users AS u
  WHERE u.id IN (SELECT b.id FROM batch AS b WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL)
  FOR KEY SHARE OF u
),
repaired AS (
  INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
  SELECT g.id, g.email, g.email_confirmed_at IS NOT NULL, coalesce(g.created_at, now()), coalesce(g.updated_at, g.created_at, now())
  FROM ghosts AS g
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object(
        'batches', coalesce((details ->> 'batches')::int, 0) + 1,
        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1),
        'heartbeat_at', clock_timestamp())
  WHERE id = %(run_id)s AND EXISTS (SELECT 1 FROM batch)
  RETURNING 1
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM repaired) AS repaired,
       (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM progress) AS logged;

-- params: {'after': UUID('00000000-0000-4000-8000-000000000002'), 'batch_size': 2}
SELECT u.id, (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL AS is_ghost
FROM auth.users AS u
WHERE CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid)
ORDER BY u.id
LIMIT %(batch_size)s;

-- params: {'lock_timeout': '400ms', 'ghost_ids': ['00000000-0000-4000-8000-000000000003', '00000000-0000-4000-8000-000000000004']}
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, coalesce(u.created_at, now()), coalesce(u.updated_at, u.created_at, now())
FROM (SELECT a.* FROM auth.users AS a
      WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
        AND a.id = ANY (CAST(%(ghost_ids)s AS uuid[]))
        AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id)
      FOR KEY SHARE OF a) AS u
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- params: {'lock_timeout': '400ms', 'ghost_ids': ['00000000-0000-4000-8000-000000000003']}
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, coalesce(u.created_at, now()), coalesce(u.updated_at, u.created_at, now())
FROM (SELECT a.* FROM auth.users AS a
      WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
        AND a.id = ANY (CAST(%(ghost_ids)s AS uuid[]))
        AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id)
      FOR KEY SHARE OF a) AS u
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- params: {'ghost_id': '00000000-0000-4000-8000-000000000003', 'failed_state': '23514', 'failed_message': 'new row for relation "users" violates check constraint "app_rule"'}
UPDATE public.cleanup_audit_log
SET details = details || jsonb_build_object('unrepairable',
      coalesce(details -> 'unrepairable', '[]'::jsonb)
      || jsonb_build_array(jsonb_build_object('id', CAST(%(ghost_id)s AS text), 'sqlstate', CAST(%(failed_state)s AS text),
                                              'message', CAST(%(failed_message)s AS text))))
WHERE id = (SELECT max(l.id) FROM public.cleanup_audit_log AS l
            WHERE l.job_name = 'backfill_ghost_users' AND l.status = 'running'
              AND l.details ->> 'pid' = pg_backend_pid()::text);

-- params: {'lock_timeout': '400ms', 'ghost_ids': ['00000000-0000-4000-8000-000000000004']}
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, coalesce(u.created_at, now()), coalesce(u.updated_at, u.created_at, now())
FROM (SELECT a.* FROM auth.users AS a
      WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
        AND a.id = ANY (CAST(%(ghost_ids)s AS uuid[]))
        AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id)
      FOR KEY SHARE OF a) AS u
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- params: {'repaired': 1, 'last_id': '00000000-0000-4000-8000-000000000004', 'run_id': 1}
UPDATE public.cleanup_audit_log
SET records_affected = records_affected + CAST(%(repaired)s AS int),
    details = details || jsonb_strip_nulls(jsonb_build_object(
      'batches', coalesce((details ->> 'batches')::int, 0) + 1,
      'last_id', CAST(%(last_id)s AS text),
      'heartbeat_at', clock_timestamp()))
WHERE id = %(run_id)s;

-- params: {'lock_timeout': '400ms', 'after': '00000000-0000-4000-8000-000000000004', 'batch_size': 2, 'run_id': 1}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
ghosts AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
  FROM auth.users AS u
  WHERE u.id IN (SELECT b.id FROM batch AS b WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL)
  FOR KEY SHARE OF u
),
repaired AS (
  INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
  SELECT g.id, g.email, g.email_confirmed_at IS NOT NULL, coalesce(g.created_at, now()), coalesce(g.updated_at, g.created_at, now())
  FROM ghosts AS g
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object(
        'batches', coalesce((details ->> 'batches')::int, 0) + 1,
        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1),
        'heartbeat_at', clock_timestamp())
  WHERE id = %(run_id)s AND EXISTS (SELECT 1 FROM batch)
  RETURNING 1
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM repaired) AS repaired,
       (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM progress) AS logged;

-- params: {'lock_timeout': '400ms', 'after': UUID('00000000-0000-4000-8000-000000000005'), 'batch_size': 2, 'run_id': 1}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
ghosts AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
  FROM auth.users AS u
  WHERE u.id IN (SELECT b.id FROM batch AS b WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL)
  FOR KEY SHARE OF u
),
repaired AS (
  INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
  SELECT g.id, g.email, g.email_confirmed_at IS NOT NULL, coalesce(g.created_at, now()), coalesce(g.updated_at, g.created_at, now())
  FROM ghosts AS g
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object(
        'batches', coalesce((details ->> 'batches')::int, 0) + 1,
        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1),
        'heartbeat_at', clock_timestamp())
  WHERE id = %(run_id)s AND EXISTS (SELECT 1 FROM batch)
  RETURNING 1
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM repaired) AS repaired,
       (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM progress) AS logged;

SELECT CAST(ARRAY(
  SELECT DISTINCT l.virtualtransaction
  FROM pg_catalog.pg_locks AS l
  WHERE l.locktype = 'relation' AND l.relation = 'auth.users'::pg_catalog.regclass
    AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database())
    AND l.granted AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
    AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
) AS text[]) AS writers;

-- params: {'lock_timeout': '400ms', 'horizon': '<xid>', 'run_id': 1}
WITH recent AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND pg_catalog.age(u.xmin) <= (SELECT pg_catalog.age(CAST(CAST(%(horizon)s AS text) AS xid)))
    AND (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL
),
ghosts AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
  FROM auth.users AS u
  WHERE u.id IN (SELECT r.id FROM recent AS r)
  FOR KEY SHARE OF u
),
repaired AS (
  INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
  SELECT g.id, g.email, g.email_confirmed_at IS NOT NULL, coalesce(g.created_at, now()), coalesce(g.updated_at, g.created_at, now())
  FROM ghosts AS g
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object('swept', true, 'heartbeat_at', clock_timestamp())
  WHERE id = %(run_id)s
  RETURNING 1
)
SELECT (SELECT count(*) FROM repaired) AS repaired, (SELECT count(*) FROM progress) AS logged;

-- params: {'after': None, 'batch_size': 2}
SELECT u.id, (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL AS is_ghost
FROM auth.users AS u
WHERE CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid)
ORDER BY u.id
LIMIT %(batch_size)s;

-- params: {'after': '00000000-0000-4000-8000-000000000002', 'batch_size': 2}
SELECT u.id, (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL AS is_ghost
FROM auth.users AS u
WHERE CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid)
ORDER BY u.id
LIMIT %(batch_size)s;

-- params: {'after': '00000000-0000-4000-8000-000000000004', 'batch_size': 2}
SELECT u.id, (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL AS is_ghost
FROM auth.users AS u
WHERE CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid)
ORDER BY u.id
LIMIT %(batch_size)s;

-- params: {'lock_timeout': '400ms', 'ghost_ids': ['00000000-0000-4000-8000-000000000005']}
INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, coalesce(u.created_at, now()), coalesce(u.updated_at, u.created_at, now())
FROM (SELECT a.* FROM auth.users AS a
      WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
        AND a.id = ANY (CAST(%(ghost_ids)s AS uuid[]))
        AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id)
      FOR KEY SHARE OF a) AS u
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- params: {'ids': ['00000000-0000-4000-8000-000000000005']}
SELECT a.id::text FROM auth.users AS a WHERE a.id = ANY (CAST(%(ids)s AS uuid[])) AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id);

SELECT coalesce(string_agg(format('%%s %%s', kind, name), ', ' ORDER BY kind, name), '') FROM (  SELECT 'BEFORE INSERT trigger' AS kind, t.tgname::text AS name FROM pg_catalog.pg_trigger AS t  WHERE t.tgrelid = pg_catalog.to_regclass('public.users') AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')    AND (t.tgtype & 7) = 7  UNION ALL  SELECT 'rule', r.rulename::text FROM pg_catalog.pg_rewrite AS r  WHERE r.ev_class = pg_catalog.to_regclass('public.users') AND r.ev_type = '3' AND r.is_instead) AS s;

-- params: {'ghost_id': '00000000-0000-4000-8000-000000000005', 'failed_state': '02000', 'failed_message': 'the insert wrote no row: BEFORE INSERT trigger app_skip on public.users skipped it'}
UPDATE public.cleanup_audit_log
SET details = details || jsonb_build_object('unrepairable',
      coalesce(details -> 'unrepairable', '[]'::jsonb)
      || jsonb_build_array(jsonb_build_object('id', CAST(%(ghost_id)s AS text), 'sqlstate', CAST(%(failed_state)s AS text),
                                              'message', CAST(%(failed_message)s AS text))))
WHERE id = (SELECT max(l.id) FROM public.cleanup_audit_log AS l
            WHERE l.job_name = 'backfill_ghost_users' AND l.status = 'running'
              AND l.details ->> 'pid' = pg_backend_pid()::text);

-- params: {'repaired': 0, 'last_id': None, 'run_id': 1}
UPDATE public.cleanup_audit_log
SET records_affected = records_affected + CAST(%(repaired)s AS int),
    details = details || jsonb_strip_nulls(jsonb_build_object(
      'batches', coalesce((details ->> 'batches')::int, 0) + 1,
      'last_id', CAST(%(last_id)s AS text),
      'heartbeat_at', clock_timestamp()))
WHERE id = %(run_id)s;

-- params: {'after': '00000000-0000-4000-8000-000000000005', 'batch_size': 2}
SELECT u.id, (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL AS is_ghost
FROM auth.users AS u
WHERE CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid)
ORDER BY u.id
LIMIT %(batch_size)s;

-- params: {'run_status': 'partial', 'run_error': '2 ghost(s) could not be given a profile (recorded in the audit row\'s unrepairable): 23514 new row for relation "users" violates check constraint "app_rule"; the insert wrote no row: BEFORE INSERT trigger app_skip on public.users skipped it', 'run_id': 1}
UPDATE public.cleanup_audit_log
SET status = %(run_status)s,
    finished_at = clock_timestamp(),
    details = CASE WHEN CAST(%(run_error)s AS text) IS NULL THEN details
                   ELSE details || jsonb_build_object('error', CAST(%(run_error)s AS text)) END
WHERE id = %(run_id)s;

