SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = pg_catalog.to_regclass('public.users') AND a.attnum > 0 AND NOT a.attisdropped;

SELECT CASE WHEN c.reltuples < 0 OR (c.reltuples = 0 AND c.relpages > 0)
            THEN (SELECT count(*) FROM auth.users) ELSE c.reltuples::bigint END
FROM pg_catalog.pg_class AS c WHERE c.oid = 'auth.users'::pg_catalog.regclass;

-- params: {'job': 'resync_profiles', 'dead_after': 60.0}
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

-- params: {'job': 'resync_profiles', 'run_mode': 'online'}
INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
SELECT %(job)s, 'running', 0, clock_timestamp(),
       jsonb_build_object('mode', CAST(%(run_mode)s AS text), 'pid', pg_backend_pid(),
                          'backend_start', a.backend_start, 'batches', 0,
                          'heartbeat_at', clock_timestamp())
FROM pg_stat_activity AS a
WHERE a.pid = pg_backend_pid()
RETURNING id;

-- params: {'lock_timeout': '50ms', 'after': None, 'batch_size': 2, 'run_id': 3}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
stale AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.deleted_at
  FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
  WHERE u.id IN (SELECT b.id FROM batch AS b)
    AND (p.email IS DISTINCT FROM (u.email) OR p.email_verified IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL) OR p.deleted_at IS DISTINCT FROM (u.deleted_at))
  FOR SHARE OF u
),
repaired AS (
  UPDATE public.users AS p
  SET email = s.email, email_verified = s.email_confirmed_at IS NOT NULL, deleted_at = s.deleted_at, updated_at = now()
  FROM stale AS s
  WHERE p.id = s.id
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

-- params: {'lock_timeout': '50ms', 'after': UUID('00000000-0000-4000-8000-000000000002'), 'batch_size': 2, 'run_id': 3}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
stale AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.deleted_at
  FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
  WHERE u.id IN (SELECT b.id FROM batch AS b)
    AND (p.email IS DISTINCT FROM (u.email) OR p.email_verified IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL) OR p.deleted_at IS DISTINCT FROM (u.deleted_at))
  FOR SHARE OF u
),
repaired AS (
  UPDATE public.users AS p
  SET email = s.email, email_verified = s.email_confirmed_at IS NOT NULL, deleted_at = s.deleted_at, updated_at = now()
  FROM stale AS s
  WHERE p.id = s.id
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

-- params: {'lock_timeout': '50ms', 'after': UUID('00000000-0000-4000-8000-000000000002'), 'batch_size': 2, 'run_id': 3}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
stale AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.deleted_at
  FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
  WHERE u.id IN (SELECT b.id FROM batch AS b)
    AND (p.email IS DISTINCT FROM (u.email) OR p.email_verified IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL) OR p.deleted_at IS DISTINCT FROM (u.deleted_at))
  FOR SHARE OF u
),
repaired AS (
  UPDATE public.users AS p
  SET email = s.email, email_verified = s.email_confirmed_at IS NOT NULL, deleted_at = s.deleted_at, updated_at = now()
  FROM stale AS s
  WHERE p.id = s.id
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

-- params: {'lock_timeout': '50ms', 'after': UUID('00000000-0000-4000-8000-000000000002'), 'batch_size': 2, 'run_id': 3}
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(%(lock_timeout)s AS text), true)) IS NOT NULL
    AND (CAST(%(after)s AS uuid) IS NULL OR u.id > CAST(%(after)s AS uuid))
  ORDER BY u.id
  LIMIT %(batch_size)s
),
stale AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.deleted_at
  FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
  WHERE u.id IN (SELECT b.id FROM batch AS b)
    AND (p.email IS DISTINCT FROM (u.email) OR p.email_verified IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL) OR p.deleted_at IS DISTINCT FROM (u.deleted_at))
  FOR SHARE OF u
),
repaired AS (
  UPDATE public.users AS p
  SET email = s.email, email_verified = s.email_confirmed_at IS NOT NULL, deleted_at = s.deleted_at, updated_at = now()
  FROM stale AS s
  WHERE p.id = s.id
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

-- params: {'run_status': 'failed', 'run_error': '55P03 canceling statement due to lock timeout', 'run_id': 3}
UPDATE public.cleanup_audit_log
SET status = %(run_status)s,
    finished_at = clock_timestamp(),
    details = CASE WHEN CAST(%(run_error)s AS text) IS NULL THEN details
                   ELSE details || jsonb_build_object('error', CAST(%(run_error)s AS text)) END
WHERE id = %(run_id)s;

