BEGIN;

-- Running upgrade ghostsync_0002 -> ghostsync_0003

DO $ghostsync$
DECLARE
  run_id bigint;
  -- "id > after_id" alone, so the plan PL/pgSQL caches keeps the index range
  -- scan; the nil uuid, which no walk step passes, is repaired first.
  after_id uuid := '00000000-0000-0000-0000-000000000000';
  last_id uuid;
  n_repaired bigint;
  total bigint := 0;
  n_batches int := 0;
BEGIN
  INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
  VALUES ('backfill_ghost_users', 'running', 0, clock_timestamp(),
          jsonb_build_object('mode', 'offline', 'pid', pg_backend_pid(), 'batches', 0))
  RETURNING id INTO run_id;
  INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
  SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, coalesce(u.created_at, now()), coalesce(u.updated_at, u.created_at, now())
  FROM (SELECT * FROM auth.users AS a
        WHERE a.id = after_id AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id)
        FOR KEY SHARE) AS u
  ON CONFLICT (id) DO NOTHING;
  GET DIAGNOSTICS total = ROW_COUNT;
  LOOP
    WITH batch AS (
      SELECT u.id
      FROM auth.users AS u
      WHERE u.id > after_id
      ORDER BY u.id
      LIMIT 2
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

UPDATE alembic_version SET version_num='ghostsync_0003' WHERE alembic_version.version_num = 'ghostsync_0002';

COMMIT;

