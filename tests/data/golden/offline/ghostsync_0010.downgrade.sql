BEGIN;

-- Running downgrade ghostsync_0010 -> ghostsync_0009

DO $ghostsync_step$
DECLARE
  attempt int := 0;
BEGIN
  LOOP
    BEGIN
      PERFORM pg_catalog.set_config('lock_timeout',
        least(greatest(10, 400 / (SELECT 1 + count(*) FROM (SELECT g.t, g.n FROM pg_catalog.jsonb_array_elements_text(coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS g(t, n)) AS grants WHERE grants.t <> 'auth.users' AND pg_catalog.to_regclass(grants.t) IS NOT NULL AND grants.n < coalesce((SELECT min(h.n) FROM pg_catalog.jsonb_array_elements_text(coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS h(t, n) WHERE h.t = 'auth.users'), 2147483647))), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true);
      PERFORM pg_catalog.set_config('statement_timeout', '400ms', true);
      DO $ghostsync_drop$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'zz_ghostsync_on_auth_user_created' || ' ON ' || 'auth.users') THEN
          BEGIN
            DROP TRIGGER IF EXISTS zz_ghostsync_on_auth_user_created ON auth.users;
          EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'ghostsync: cannot drop trigger % on %: role % is not its owner (%) and this database '
              'does not let it drop the trigger; hosted Supabase allows it through supautils '
              '(supautils.drop_trigger_grants); here run the downgrade as the owner or a superuser '
              '(DATABASE_URL of supabase_admin); nothing of this revision was applied',
              'zz_ghostsync_on_auth_user_created', 'auth.users', current_user,
              (SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = 'auth.users'::regclass);
          END;
          DELETE FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'zz_ghostsync_on_auth_user_created' || ' ON ' || 'auth.users';
        ELSIF EXISTS (
          SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = 'auth.users'::regclass AND tgname = 'zz_ghostsync_on_auth_user_created' AND NOT tgisinternal
        ) THEN
          RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', 'zz_ghostsync_on_auth_user_created', 'auth.users';
        END IF;
      END
      $ghostsync_drop$;
      DO $ghostsync_drop$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'zz_ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users') THEN
          BEGIN
            DROP TRIGGER IF EXISTS zz_ghostsync_on_auth_user_updated ON auth.users;
          EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'ghostsync: cannot drop trigger % on %: role % is not its owner (%) and this database '
              'does not let it drop the trigger; hosted Supabase allows it through supautils '
              '(supautils.drop_trigger_grants); here run the downgrade as the owner or a superuser '
              '(DATABASE_URL of supabase_admin); nothing of this revision was applied',
              'zz_ghostsync_on_auth_user_updated', 'auth.users', current_user,
              (SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = 'auth.users'::regclass);
          END;
          DELETE FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'zz_ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users';
        ELSIF EXISTS (
          SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = 'auth.users'::regclass AND tgname = 'zz_ghostsync_on_auth_user_updated' AND NOT tgisinternal
        ) THEN
          RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', 'zz_ghostsync_on_auth_user_updated', 'auth.users';
        END IF;
      END
      $ghostsync_drop$;
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > 20 THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within 400 ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', 'drop trigger(s) zz_ghostsync_on_auth_user_created, zz_ghostsync_on_auth_user_updated on auth.users', attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least(2.0, 0.1 * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;

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
<<sync>>
DECLARE
  failed_state text;
  failed_message text;
  deferred record;
  has_deferred boolean;
  remembered text;
  already boolean;
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
  BEGIN
    -- A plain INSERT: a profile already there (the app's, a backfill's) is a unique
    -- violation, taken below for the success it is; no speculative insertion.
    INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
    VALUES (
      NEW.id,
      NEW.email,
      NEW.email_confirmed_at IS NOT NULL,
      NEW.deleted_at,
      coalesce(NEW.created_at, pg_catalog.now()),
      coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())
    )
    -- A deferred constraint of the app's profile table would be checked at COMMIT,
    -- outside this block, and fail the auth service's write: it is checked here
    -- instead. Whether the table has one is read with the insert, and remembered for
    -- the rest of the transaction: from the insert on, the transaction holds a lock
    -- on public.users under which no constraint of it can be added or dropped.
    RETURNING EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                      WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred)
    INTO sync.has_deferred;
    IF has_deferred THEN
      FOR deferred IN
        SELECT c.conname FROM pg_catalog.pg_constraint AS c
        WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred
      LOOP
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferred.conname);
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I DEFERRED', deferred.conname);
      END LOOP;
    END IF;
    IF has_deferred IS NOT NULL THEN
      remembered := pg_catalog.set_config('ghostsync.deferred_profile_constraints', has_deferred::text, true);
    END IF;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    IF failed_state = '23505' THEN
      -- this account's profile already there (the app's, a backfill's): nothing failed
      already := EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = NEW.id);
    END IF;
    IF NOT coalesce(already, false) THEN
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
    END IF;
  END;
  RETURN NEW;
END sync
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
VALUES ('function', 'ghostsync.handle_new_user()', true, 'ghostsync_0008', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure('ghostsync.handle_user_updated()') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_user_updated()'
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', 'ghostsync.handle_user_updated()';
  END IF;
END
$ghostsync_guard$;
CREATE OR REPLACE FUNCTION ghostsync.handle_user_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
  deferred record;
  has_deferred boolean;
  remembered text;
BEGIN
  BEGIN
    UPDATE public.users
    SET email = NEW.email,
        email_verified = NEW.email_confirmed_at IS NOT NULL,
        deleted_at = NEW.deleted_at,
        updated_at = pg_catalog.now()
    WHERE id = NEW.id;
    IF NOT FOUND THEN
      -- The profile may be being written right now by another transaction (a
      -- backfill batch that read this account before this change): wait for it,
      -- then write this row's values over it. The newest auth row always wins.
      INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
      VALUES (
        NEW.id,
        NEW.email,
        NEW.email_confirmed_at IS NOT NULL,
        NEW.deleted_at,
        coalesce(NEW.created_at, pg_catalog.now()),
        pg_catalog.now()
      )
      ON CONFLICT (id) DO UPDATE
        SET email = EXCLUDED.email,
            email_verified = EXCLUDED.email_verified,
            deleted_at = EXCLUDED.deleted_at,
            updated_at = EXCLUDED.updated_at;
    END IF;
    -- A deferred constraint of the app's profile table would be checked at COMMIT,
    -- outside this block, and fail the auth service's write: it is checked here
    -- instead. Whether the table has one is read once a transaction (the signup's
    -- insert sync may have read it already): the statement above locked public.users,
    -- and no constraint of it can be added or dropped until the transaction ends.
    remembered := pg_catalog.current_setting('ghostsync.deferred_profile_constraints', true);
    IF remembered IS NULL OR remembered = '' THEN
      has_deferred := EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                              WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred);
      remembered := pg_catalog.set_config('ghostsync.deferred_profile_constraints', has_deferred::text, true);
    ELSE
      has_deferred := remembered = 'true';
    END IF;
    IF has_deferred THEN
      FOR deferred IN
        SELECT c.conname FROM pg_catalog.pg_constraint AS c
        WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred
      LOOP
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferred.conname);
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I DEFERRED', deferred.conname);
      END LOOP;
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
$function$;
REVOKE ALL ON FUNCTION ghostsync.handle_user_updated() FROM PUBLIC;
DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_user_updated() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_user_updated() FROM authenticated;
  END IF;
END
$ghostsync_guard$;
INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('function', 'ghostsync.handle_user_updated()', true, 'ghostsync_0008', current_user)
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
      DO $ghostsync_restore$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_created' || ' ON ' || 'auth.users')
           OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                          WHERE tgrelid = 'auth.users'::pg_catalog.regclass AND tgname = 'ghostsync_on_auth_user_created' AND NOT tgisinternal) THEN
          EXECUTE 'CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_new_user()';
          INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
      VALUES ('trigger', 'ghostsync_on_auth_user_created ON auth.users', true, 'ghostsync_0008', current_user)
      ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();
        ELSE
          RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', 'ghostsync_on_auth_user_created', 'auth.users';
        END IF;
      END
      $ghostsync_restore$;
      DO $ghostsync_restore$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users')
           OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                          WHERE tgrelid = 'auth.users'::pg_catalog.regclass AND tgname = 'ghostsync_on_auth_user_updated' AND NOT tgisinternal) THEN
          EXECUTE 'CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, deleted_at ON auth.users FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM (new.email)::text) OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM (new.email_confirmed_at IS NULL)) OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION ghostsync.handle_user_updated()';
          INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
      VALUES ('trigger', 'ghostsync_on_auth_user_updated ON auth.users', true, 'ghostsync_0008', current_user)
      ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();
        ELSE
          RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', 'ghostsync_on_auth_user_updated', 'auth.users';
        END IF;
      END
      $ghostsync_restore$;
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > 20 THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within 400 ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', 'restore ghostsync_0008''s trigger(s) ghostsync_on_auth_user_created, ghostsync_on_auth_user_updated', attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least(2.0, 0.1 * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.write_profile(uuid,boolean)') THEN
    EXECUTE 'DROP FUNCTION IF EXISTS ' || 'ghostsync.write_profile(uuid,boolean)';
    DELETE FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.write_profile(uuid,boolean)';
  ELSIF pg_catalog.to_regprocedure('ghostsync.write_profile(uuid,boolean)') IS NOT NULL THEN
    RAISE NOTICE 'ghostsync: function % was not created by ghostsync: left in place', 'ghostsync.write_profile(uuid,boolean)';
  END IF;
END
$ghostsync_guard$;

UPDATE alembic_version SET version_num='ghostsync_0009' WHERE alembic_version.version_num = 'ghostsync_0010';

COMMIT;

