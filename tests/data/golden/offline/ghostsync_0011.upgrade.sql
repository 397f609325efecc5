BEGIN;

-- Running upgrade ghostsync_0010 -> ghostsync_0011

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure('ghostsync.handle_users_deleted()') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_users_deleted()'
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', 'ghostsync.handle_users_deleted()';
  END IF;
END
$ghostsync_guard$;
CREATE OR REPLACE FUNCTION ghostsync.handle_users_deleted()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
  removed bigint;
  referencing record;
BEGIN
  -- Only the profile table ghostsync created is ghostsync's to empty. An adopted one
  -- follows the app's key on id: a cascading key removes the profile, any other key
  -- refuses the delete (as without ghostsync), and without a key the rows are the app's.
  IF NOT EXISTS (SELECT 1 FROM ghostsync.objects AS o
                 WHERE o.kind = 'table' AND o.name = 'public.users' AND o.created) THEN
    RETURN NULL;
  END IF;
  -- Every account one DELETE removed, in one statement and one subtransaction (the auth
  -- service's cleanup deletes up to 100 anonymous users at once). A row an app's BEFORE
  -- DELETE trigger kept (a soft delete) is not in deleted_users: its profile stays as it is.
  BEGIN
    DELETE FROM public.users AS p USING deleted_users AS d WHERE p.id = d.id;
    GET DIAGNOSTICS removed = ROW_COUNT;
    IF removed > 0 THEN
      -- A deferrable key of an app table that references public.users (NO ACTION, the one
      -- action PostgreSQL defers) would be checked at COMMIT, outside this block, and fail
      -- the auth service's delete: it is checked now, in a block rolled back on purpose.
      -- Its rollback gives the caller back its own SET CONSTRAINTS state (whatever it had
      -- made IMMEDIATE or DEFERRED) and un-marks the checks fired, which run again at COMMIT.
      -- A violation is not caught here: it rolls back the delete, and is recorded below.
      BEGIN
        FOR referencing IN
          SELECT DISTINCT n.nspname, c.conname
          FROM pg_catalog.pg_trigger AS t
          JOIN pg_catalog.pg_constraint AS c ON c.oid = t.tgconstraint
          JOIN pg_catalog.pg_namespace AS n ON n.oid = c.connamespace
          WHERE t.tgrelid = 'public.users'::pg_catalog.regclass AND t.tgdeferrable
            AND c.contype = 'f' AND c.confrelid = 'public.users'::pg_catalog.regclass
        LOOP
          -- Schema-qualified, so a key of that name in another schema is not touched. What
          -- remains (documented PostgreSQL behaviour): a constraint of the same name on
          -- another table of the same schema is checked now too, and again at COMMIT.
          EXECUTE pg_catalog.format('SET CONSTRAINTS %I.%I IMMEDIATE', referencing.nspname, referencing.conname);
        END LOOP;
        RAISE SQLSTATE 'GSYNC';
      EXCEPTION WHEN SQLSTATE 'GSYNC' THEN
        NULL;
      END;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    BEGIN
      INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
      SELECT d.id, TG_OP, failed_state, failed_message FROM deleted_users AS d
      WHERE EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = d.id)
      ON CONFLICT (user_id) DO UPDATE
        SET operation = EXCLUDED.operation, sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,
            last_failed_at = pg_catalog.now(), failures = f.failures + 1;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'ghostsync: profile delete of % account(s) failed (% %) and could not be recorded: %',
        (SELECT pg_catalog.count(*) FROM deleted_users), failed_state, failed_message, SQLERRM;
    END;
  END;
  RETURN NULL;
END
$function$;
REVOKE ALL ON FUNCTION ghostsync.handle_users_deleted() FROM PUBLIC;
DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_users_deleted() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_users_deleted() FROM authenticated;
  END IF;
END
$ghostsync_guard$;
INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('function', 'ghostsync.handle_users_deleted()', true, 'ghostsync_0011', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure('ghostsync.handle_user_deleted()') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_user_deleted()'
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', 'ghostsync.handle_user_deleted()';
  END IF;
END
$ghostsync_guard$;
CREATE OR REPLACE FUNCTION ghostsync.handle_user_deleted()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
BEGIN
  -- TRUNCATE auth.users removes every account with no row a DELETE trigger sees. Only the
  -- profile table ghostsync created is ghostsync's to empty (its own key, which made
  -- TRUNCATE ... CASCADE empty it, went with ghostsync_0011). TRUNCATE is no write of the
  -- auth service: a profile that cannot go is left to status and repair, with a WARNING
  -- (an app's deferred key to public.users is still checked at COMMIT).
  IF NOT EXISTS (SELECT 1 FROM ghostsync.objects AS o
                 WHERE o.kind = 'table' AND o.name = 'public.users' AND o.created) THEN
    RETURN NULL;
  END IF;
  BEGIN
    DELETE FROM public.users AS p WHERE NOT EXISTS (SELECT 1 FROM auth.users AS u WHERE u.id = p.id);
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    RAISE WARNING 'ghostsync: the profiles of the truncated accounts could not be deleted (% %): they stay as '
      'orphans, which ghostsync status counts and ghostsync repair deletes', failed_state, failed_message;
  END;
  RETURN NULL;
END
$function$;
REVOKE ALL ON FUNCTION ghostsync.handle_user_deleted() FROM PUBLIC;
DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_user_deleted() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_user_deleted() FROM authenticated;
  END IF;
END
$ghostsync_guard$;
INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('function', 'ghostsync.handle_user_deleted()', true, 'ghostsync_0011', current_user)
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
          WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_user_deleted' AND NOT tgisinternal
        ) AND NOT EXISTS (
          SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_deleted' || ' ON ' || 'auth.users'
        ) THEN
          RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
            'ghostsync_on_auth_user_deleted', 'auth.users';
        END IF;
      END
      $ghostsync_guard$;
      CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_deleted AFTER TRUNCATE ON auth.users FOR EACH STATEMENT EXECUTE FUNCTION ghostsync.handle_user_deleted();
      INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
      VALUES ('trigger', 'ghostsync_on_auth_user_deleted' || ' ON ' || 'auth.users', true, 'ghostsync_0011', current_user)
      ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > 20 THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within 400 ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', 'create trigger(s) ghostsync_on_auth_user_deleted on auth.users', attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least(2.0, 0.1 * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;

DO $ghostsync_step$
DECLARE
  attempt int := 0;
BEGIN
  LOOP
    BEGIN
      PERFORM pg_catalog.set_config('lock_timeout',
        least(greatest(10, 400 / 2), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true);
      PERFORM pg_catalog.set_config('statement_timeout', '400ms', true);
      DO $ghostsync$
      DECLARE
        own_key text;
      BEGIN
        IF NOT EXISTS (SELECT 1 FROM ghostsync.objects AS o
                       WHERE o.kind = 'table' AND o.name = 'public.users' AND o.created) THEN
          RETURN;
        END IF;
        SELECT c.conname INTO own_key
        FROM pg_catalog.pg_constraint AS c
        WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.contype = 'f'
          AND c.confrelid = 'auth.users'::pg_catalog.regclass AND c.confdeltype = 'c'
          AND c.conkey = ARRAY[(SELECT a.attnum FROM pg_catalog.pg_attribute AS a
                                WHERE a.attrelid = c.conrelid AND a.attname = 'id')]
          AND c.confkey = ARRAY[(SELECT a.attnum FROM pg_catalog.pg_attribute AS a
                                 WHERE a.attrelid = c.confrelid AND a.attname = 'id')];
        IF own_key IS NOT NULL THEN
          EXECUTE pg_catalog.format('ALTER TABLE public.users DROP CONSTRAINT %I', own_key);
        END IF;
      END
      $ghostsync$;
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > 20 THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within 400 ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', 'drop ghostsync''s own foreign key public.users(id) -> auth.users(id)', attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least(2.0, 0.1 * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;

UPDATE alembic_version SET version_num='ghostsync_0011' WHERE alembic_version.version_num = 'ghostsync_0010';

COMMIT;

