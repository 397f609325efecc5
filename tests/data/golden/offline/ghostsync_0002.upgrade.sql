BEGIN;

-- Running upgrade ghostsync_0001 -> ghostsync_0002

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure('ghostsync.handle_new_user()') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_new_user()'
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', 'ghostsync.handle_new_user()';
  END IF;
END
$ghostsync_guard$;
CREATE OR REPLACE FUNCTION ghostsync.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
BEGIN
  -- On a public.users ghostsync adopted, the app's own trigger on auth.users that inserts
  -- into public.users (a match on its function's text) may do so after this one, plainly,
  -- and would then fail the signup on the key: while such a trigger is there, the profile
  -- is left to the app, and ghostsync's columns of it to the update sync, ghostsync_0009's
  -- resync and ghostsync_0010's catch-up and syncs at COMMIT.
  IF EXISTS (SELECT 1 FROM ghostsync.objects AS o
             WHERE o.kind = 'table' AND o.name = 'public.users' AND NOT o.created)
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS f ON f.oid = t.tgfoid
                 WHERE t.tgrelid = 'auth.users'::pg_catalog.regclass AND NOT t.tgisinternal
                   AND t.tgenabled IN ('O', 'A') AND (t.tgtype & 4) <> 0
                   AND f.pronamespace <> 'ghostsync'::pg_catalog.regnamespace
                   AND f.prosrc ~* 'insert\s+into\s+("?public"?\s*\.\s*)?"?users"?\M') THEN
    RETURN NEW;
  END IF;
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
REVOKE ALL ON FUNCTION ghostsync.handle_new_user() FROM PUBLIC;
DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_new_user() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_new_user() FROM authenticated;
  END IF;
END
$ghostsync_guard$;
INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('function', 'ghostsync.handle_new_user()', true, 'ghostsync_0002', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_step$
DECLARE
  attempt int := 0;
BEGIN
  LOOP
    BEGIN
      PERFORM pg_catalog.set_config('lock_timeout',
        least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true);
      PERFORM pg_catalog.set_config('statement_timeout', '400ms', true);
      DO $ghostsync_guard$
      BEGIN
        IF EXISTS (
          SELECT 1 FROM pg_catalog.pg_trigger
          WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_user_created' AND NOT tgisinternal
        ) AND NOT EXISTS (
          SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_created' || ' ON ' || 'auth.users'
        ) THEN
          RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
            'ghostsync_on_auth_user_created', 'auth.users';
        END IF;
      END
      $ghostsync_guard$;
      CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_new_user();
      INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
      VALUES ('trigger', 'ghostsync_on_auth_user_created' || ' ON ' || 'auth.users', true, 'ghostsync_0002', current_user)
      ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > 20 THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within 400 ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', 'create trigger(s) ghostsync_on_auth_user_created on auth.users', attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least(2.0, 0.1 * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;

UPDATE alembic_version SET version_num='ghostsync_0002' WHERE alembic_version.version_num = 'ghostsync_0001';

COMMIT;

