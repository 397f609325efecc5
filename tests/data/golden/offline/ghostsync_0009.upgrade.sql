BEGIN;

-- Running upgrade ghostsync_0008 -> ghostsync_0009

DO $ghostsync$
DECLARE
  run_id bigint;
  after_id uuid := '00000000-0000-0000-0000-000000000000';
  last_id uuid;
  n_repaired bigint;
  total bigint := 0;
  n_batches int := 0;
BEGIN
  INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
  VALUES ('resync_profiles', 'running', 0, clock_timestamp(),
          jsonb_build_object('mode', 'offline', 'pid', pg_backend_pid(), 'batches', 0))
  RETURNING id INTO run_id;
  UPDATE public.users AS p
  SET email = u.email, email_verified = u.email_confirmed_at IS NOT NULL, deleted_at = u.deleted_at, updated_at = now()
  FROM (SELECT * FROM auth.users AS a WHERE a.id = after_id FOR SHARE) AS u
  WHERE p.id = u.id
    AND (p.email IS DISTINCT FROM (u.email) OR p.email_verified IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL) OR p.deleted_at IS DISTINCT FROM (u.deleted_at));
  GET DIAGNOSTICS total = ROW_COUNT;
  LOOP
    WITH batch AS (
      SELECT u.id
      FROM auth.users AS u
      WHERE u.id > after_id
      ORDER BY u.id
      LIMIT 2
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
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM repaired)
    INTO last_id, n_repaired;
    EXIT WHEN last_id IS NULL;
    after_id := last_id;
    total := total + n_repaired;
    n_batches := n_batches + 1;
  END LOOP;
  UPDATE public.cleanup_audit_log
  SET status = 'succeeded', records_affected = total, finished_at = clock_timestamp(),
      details = details || jsonb_build_object('batches', n_batches, 'last_id', after_id)
  WHERE id = run_id;
END
$ghostsync$;

UPDATE alembic_version SET version_num='ghostsync_0009' WHERE alembic_version.version_num = 'ghostsync_0008';

COMMIT;

