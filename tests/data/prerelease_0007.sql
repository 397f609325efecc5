BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> ghostsync_0001

DO $ghostsync$
BEGIN
  IF to_regclass('auth.users') IS NULL THEN
    RAISE EXCEPTION 'ghostsync: auth.users does not exist or is not visible to role %; run against a Supabase database', current_user;
  END IF;
END
$ghostsync$;;

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

DO $ghostsync$
DECLARE
  problems text[] := '{}';
  need record;
  found_type text;
BEGIN
  IF to_regclass('public.users') IS NULL THEN
    CREATE TABLE public.users (
      id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
      email text,
      email_verified boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
    COMMENT ON TABLE public.users IS 'One profile per auth.users row, kept by ghostsync.';
    RETURN;
  END IF;

  FOR need IN
    SELECT * FROM (VALUES
      ('id', ARRAY['uuid']),
      ('email', ARRAY['text', 'character varying', 'citext']),
      ('email_verified', ARRAY['boolean']),
      ('created_at', ARRAY['timestamp with time zone', 'timestamp without time zone']),
      ('updated_at', ARRAY['timestamp with time zone', 'timestamp without time zone'])
    ) AS n(col, types)
  LOOP
    SELECT regexp_replace(format_type(a.atttypid, NULL), '^.*\.', '') INTO found_type
    FROM pg_attribute a
    WHERE a.attrelid = 'public.users'::regclass AND a.attname = need.col
      AND a.attnum > 0 AND NOT a.attisdropped;
    IF found_type IS NULL THEN
      problems := problems || format('column %s is missing (needs %s)', need.col, need.types[1]);
    ELSIF NOT found_type = ANY (need.types) THEN
      problems := problems || format('column %s is %s (needs %s)', need.col, found_type,
                                     array_to_string(need.types, ' or '));
    END IF;
  END LOOP;

  IF NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND i.indpred IS NULL
      AND i.indnatts = 1
      AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                         WHERE attrelid = 'public.users'::regclass AND attname = 'id' AND NOT attisdropped)
  ) THEN
    problems := problems || 'column id is neither the primary key nor unique'::text;
  END IF;

  problems := problems || ARRAY(
    SELECT format('column %s is NOT NULL without a default (ghostsync cannot fill it)', a.attname)
    FROM pg_attribute a
    WHERE a.attrelid = 'public.users'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
      AND a.attname NOT IN ('id', 'email', 'email_verified', 'created_at', 'updated_at')
    ORDER BY a.attnum
  );

  IF cardinality(problems) > 0 THEN
    RAISE EXCEPTION 'ghostsync: existing table public.users cannot be adopted: %',
      array_to_string(problems, '; ');
  END IF;
END
$ghostsync$;;

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

DO $ghostsync$
DECLARE
  problems text[] := '{}';
  need record;
  found_type text;
BEGIN
  IF to_regclass('public.cleanup_audit_log') IS NULL THEN
    CREATE TABLE public.cleanup_audit_log (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      job_name text NOT NULL,
      status text NOT NULL,
      records_affected bigint NOT NULL DEFAULT 0,
      started_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz,
      details jsonb NOT NULL DEFAULT '{}'::jsonb
    );
    COMMENT ON TABLE public.cleanup_audit_log IS 'One row per ghostsync job run.';
  ELSE
    FOR need IN
      SELECT * FROM (VALUES
        ('job_name', ARRAY['text', 'character varying']),
        ('status', ARRAY['text', 'character varying']),
        ('records_affected', ARRAY['bigint', 'integer', 'numeric']),
        ('started_at', ARRAY['timestamp with time zone', 'timestamp without time zone']),
        ('finished_at', ARRAY['timestamp with time zone', 'timestamp without time zone']),
        ('details', ARRAY['jsonb'])
      ) AS n(col, types)
    LOOP
      SELECT regexp_replace(format_type(a.atttypid, NULL), '^.*\.', '') INTO found_type
      FROM pg_attribute a
      WHERE a.attrelid = 'public.cleanup_audit_log'::regclass AND a.attname = need.col
        AND a.attnum > 0 AND NOT a.attisdropped;
      IF found_type IS NULL THEN
        problems := problems || format('column %s is missing (needs %s)', need.col, need.types[1]);
      ELSIF NOT found_type = ANY (need.types) THEN
        problems := problems || format('column %s is %s (needs %s)', need.col, found_type,
                                       array_to_string(need.types, ' or '));
      END IF;
    END LOOP;
    problems := problems || ARRAY(
      SELECT format('column %s is NOT NULL without a default (ghostsync cannot fill it)', a.attname)
      FROM pg_attribute a
      WHERE a.attrelid = 'public.cleanup_audit_log'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
        AND a.attname NOT IN ('job_name', 'status', 'records_affected', 'started_at', 'finished_at', 'details')
      ORDER BY a.attnum
    );
    IF cardinality(problems) > 0 THEN
      RAISE EXCEPTION 'ghostsync: existing table public.cleanup_audit_log cannot be adopted: %',
        array_to_string(problems, '; ');
    END IF;
  END IF;

  -- The audit log is operators' data: closed to the API roles of end users.
  ALTER TABLE public.cleanup_audit_log ENABLE ROW LEVEL SECURITY;
  REVOKE ALL ON TABLE public.cleanup_audit_log FROM PUBLIC;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON TABLE public.cleanup_audit_log FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON TABLE public.cleanup_audit_log FROM authenticated;
  END IF;

  -- Alembic's version table lands in public too, where Supabase's default
  -- privileges open it to end users.
  IF to_regclass('public.alembic_version') IS NOT NULL
     AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'public.alembic_version'::regclass), 'USAGE') THEN
    ALTER TABLE public.alembic_version ENABLE ROW LEVEL SECURITY;
    REVOKE ALL ON TABLE public.alembic_version FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
      REVOKE ALL ON TABLE public.alembic_version FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
      REVOKE ALL ON TABLE public.alembic_version FROM authenticated;
    END IF;
  END IF;
END
$ghostsync$;;

INSERT INTO alembic_version (version_num) VALUES ('ghostsync_0001') RETURNING alembic_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade ghostsync_0001 -> ghostsync_0002

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

CREATE OR REPLACE FUNCTION public.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
BEGIN
  INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
  VALUES (
    NEW.id,
    NEW.email,
    NEW.email_confirmed_at IS NOT NULL,
    coalesce(NEW.created_at, pg_catalog.now()),
    coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())
  )
  ON CONFLICT (id) DO NOTHING;
  RETURN NEW;
END
$function$;

REVOKE ALL ON FUNCTION public.handle_new_user() FROM PUBLIC;
DO $ghostsync$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION public.handle_new_user() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION public.handle_new_user() FROM authenticated;
  END IF;
END
$ghostsync$;;

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

CREATE OR REPLACE TRIGGER on_auth_user_created
  AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();;

UPDATE alembic_version SET version_num='ghostsync_0002' WHERE alembic_version.version_num = 'ghostsync_0001';

COMMIT;

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
  SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL,
         coalesce(u.created_at, now()), coalesce(u.updated_at, u.created_at, now())
  FROM auth.users AS u
  WHERE u.id = after_id AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = u.id)
  ON CONFLICT (id) DO NOTHING;
  GET DIAGNOSTICS total = ROW_COUNT;
  LOOP
    WITH batch AS (
      SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
      FROM auth.users AS u
      WHERE u.id > after_id
      ORDER BY u.id
      LIMIT 5000
    ),
    repaired AS (
      INSERT INTO public.users (id, email, email_verified, created_at, updated_at)
      SELECT id, email, email_confirmed_at IS NOT NULL,
             coalesce(created_at, now()), coalesce(updated_at, created_at, now())
      FROM batch
      WHERE (SELECT 1 FROM public.users AS p WHERE p.id = batch.id) IS NULL
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
$ghostsync$;;

UPDATE alembic_version SET version_num='ghostsync_0003' WHERE alembic_version.version_num = 'ghostsync_0002';

COMMIT;

BEGIN;

-- Running upgrade ghostsync_0003 -> ghostsync_0004

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

CREATE SCHEMA IF NOT EXISTS ghostsync;
COMMENT ON SCHEMA ghostsync IS 'ghostsync''s private objects; not for the Data API.';
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
REVOKE ALL ON SCHEMA ghostsync FROM PUBLIC;
REVOKE ALL ON TABLE ghostsync.sync_failures FROM PUBLIC;
DO $ghostsync$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON SCHEMA ghostsync FROM anon;
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON SCHEMA ghostsync FROM authenticated;
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM authenticated;
  END IF;
END
$ghostsync$;;

UPDATE alembic_version SET version_num='ghostsync_0004' WHERE alembic_version.version_num = 'ghostsync_0003';

COMMIT;

BEGIN;

-- Running upgrade ghostsync_0004 -> ghostsync_0005

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

DO $ghostsync$
DECLARE
  found_type text;
BEGIN
  SELECT format_type(a.atttypid, NULL) INTO found_type
  FROM pg_attribute a
  WHERE a.attrelid = 'public.users'::regclass AND a.attname = 'deleted_at'
    AND a.attnum > 0 AND NOT a.attisdropped;
  IF found_type IS NULL THEN
    ALTER TABLE public.users ADD COLUMN deleted_at timestamptz;
  ELSIF found_type NOT IN ('timestamp with time zone', 'timestamp without time zone') THEN
    RAISE EXCEPTION 'ghostsync: public.users.deleted_at is %, needs timestamptz', found_type;
  END IF;
END
$ghostsync$;;

UPDATE alembic_version SET version_num='ghostsync_0005' WHERE alembic_version.version_num = 'ghostsync_0004';

COMMIT;

BEGIN;

-- Running upgrade ghostsync_0005 -> ghostsync_0006

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

CREATE OR REPLACE FUNCTION public.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
BEGIN
  BEGIN
    INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
    VALUES (
      NEW.id,
      NEW.email,
      NEW.email_confirmed_at IS NOT NULL,
      NEW.deleted_at,
      coalesce(NEW.created_at, pg_catalog.now()),
      coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())
    )
    ON CONFLICT (id) DO NOTHING;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    BEGIN
      INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
      VALUES (NEW.id, TG_OP, failed_state, failed_message)
      ON CONFLICT (user_id) DO UPDATE
        SET operation = EXCLUDED.operation, sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,
            last_failed_at = pg_catalog.now(), failures = f.failures + 1;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'ghostsync: profile write for % failed (% %) and could not be recorded: %',
        NEW.id, failed_state, failed_message, SQLERRM;
    END;
  END;
  RETURN NEW;
END
$function$;;

UPDATE alembic_version SET version_num='ghostsync_0006' WHERE alembic_version.version_num = 'ghostsync_0005';

COMMIT;

BEGIN;

-- Running upgrade ghostsync_0006 -> ghostsync_0007

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

CREATE OR REPLACE FUNCTION public.handle_user_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
BEGIN
  BEGIN
    UPDATE public.users
    SET email = NEW.email,
        email_verified = NEW.email_confirmed_at IS NOT NULL,
        deleted_at = NEW.deleted_at,
        updated_at = pg_catalog.now()
    WHERE id = NEW.id;
    IF NOT FOUND THEN
      INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
      VALUES (
        NEW.id,
        NEW.email,
        NEW.email_confirmed_at IS NOT NULL,
        NEW.deleted_at,
        coalesce(NEW.created_at, pg_catalog.now()),
        pg_catalog.now()
      )
      ON CONFLICT (id) DO NOTHING;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    BEGIN
      INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
      VALUES (NEW.id, TG_OP, failed_state, failed_message)
      ON CONFLICT (user_id) DO UPDATE
        SET operation = EXCLUDED.operation, sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,
            last_failed_at = pg_catalog.now(), failures = f.failures + 1;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'ghostsync: profile update for % failed (% %) and could not be recorded: %',
        NEW.id, failed_state, failed_message, SQLERRM;
    END;
  END;
  RETURN NULL;
END
$function$;;

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

CREATE OR REPLACE FUNCTION public.handle_user_deleted()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
BEGIN
  BEGIN
    DELETE FROM public.users WHERE id = OLD.id;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    BEGIN
      INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
      VALUES (OLD.id, TG_OP, failed_state, failed_message)
      ON CONFLICT (user_id) DO UPDATE
        SET operation = EXCLUDED.operation, sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,
            last_failed_at = pg_catalog.now(), failures = f.failures + 1;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'ghostsync: profile delete for % failed (% %) and could not be recorded: %',
        OLD.id, failed_state, failed_message, SQLERRM;
    END;
  END;
  RETURN OLD;
END
$function$;;

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

REVOKE ALL ON FUNCTION public.handle_user_updated() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.handle_user_deleted() FROM PUBLIC;
DO $ghostsync$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION public.handle_user_updated() FROM anon;
    REVOKE ALL ON FUNCTION public.handle_user_deleted() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION public.handle_user_updated() FROM authenticated;
    REVOKE ALL ON FUNCTION public.handle_user_deleted() FROM authenticated;
  END IF;
END
$ghostsync$;;

SET LOCAL lock_timeout = '2000ms';

SET LOCAL statement_timeout = '60000ms';

CREATE OR REPLACE TRIGGER on_auth_user_updated
  AFTER UPDATE OF email, email_confirmed_at, deleted_at ON auth.users
  FOR EACH ROW
  WHEN (OLD.email IS DISTINCT FROM NEW.email
        OR (OLD.email_confirmed_at IS NULL) IS DISTINCT FROM (NEW.email_confirmed_at IS NULL)
        OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
  EXECUTE FUNCTION public.handle_user_updated();
CREATE OR REPLACE TRIGGER on_auth_user_deleted
  BEFORE DELETE ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_user_deleted();;

UPDATE alembic_version SET version_num='ghostsync_0007' WHERE alembic_version.version_num = 'ghostsync_0006';

COMMIT;

