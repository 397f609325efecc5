BEGIN;

-- Running upgrade ghostsync_0003 -> ghostsync_0004

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

DO $ghostsync$
DECLARE
  table_created boolean := to_regclass('ghostsync.sync_failures') IS NULL;
BEGIN
  CREATE TABLE IF NOT EXISTS ghostsync.sync_failures (
    user_id uuid PRIMARY KEY,
    operation text NOT NULL,
    sqlstate text NOT NULL,
    message text NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    failures bigint NOT NULL DEFAULT 1
  );
  COMMENT ON TABLE ghostsync.sync_failures IS
    'Profile writes that failed; the auth write went through. Cleared by ghostsync repair.';
  REVOKE ALL ON TABLE ghostsync.sync_failures FROM PUBLIC;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM authenticated;
  END IF;
  INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
  VALUES ('table', 'ghostsync.sync_failures', table_created, 'ghostsync_0004', current_user)
  ON CONFLICT (kind, name) DO NOTHING;
END
$ghostsync$;

UPDATE alembic_version SET version_num='ghostsync_0004' WHERE alembic_version.version_num = 'ghostsync_0003';

COMMIT;

