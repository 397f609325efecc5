SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

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

