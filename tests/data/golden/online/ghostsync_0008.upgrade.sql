SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

DO $ghostsync$
DECLARE
  profiles_created boolean;
  audit_created boolean;
BEGIN
  IF to_regclass('ghostsync.objects') IS NOT NULL THEN
    RETURN;
  END IF;
  PERFORM pg_catalog.set_config('ghostsync.converting_prerelease', 'on', true);
  CREATE TABLE ghostsync.objects (
    kind text NOT NULL,
    name text NOT NULL,
    created boolean NOT NULL,
    revision text NOT NULL,
    owner text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
  );
  COMMENT ON TABLE ghostsync.objects IS
    'What ghostsync created (created) or adopted (not created); nothing else is ever replaced or dropped by it.';
  REVOKE ALL ON TABLE ghostsync.objects FROM PUBLIC;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON TABLE ghostsync.objects FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON TABLE ghostsync.objects FROM authenticated;
  END IF;
  -- The pre-release ghostsync commented the tables it created, and only those.
  profiles_created := obj_description('public.users'::regclass, 'pg_class')
                      IS NOT DISTINCT FROM 'One profile per auth.users row, kept by ghostsync.';
  audit_created := obj_description('public.cleanup_audit_log'::regclass, 'pg_class')
                   IS NOT DISTINCT FROM 'One row per ghostsync job run.';
  INSERT INTO ghostsync.objects (kind, name, created, revision, owner) VALUES
    ('schema', 'ghostsync', true, 'ghostsync_0008', current_user),
    ('table', 'public.users', profiles_created, 'ghostsync_0008', current_user),
    ('table', 'public.cleanup_audit_log', audit_created, 'ghostsync_0008', current_user),
    ('table', 'ghostsync.sync_failures', true, 'ghostsync_0008', current_user),
    ('column', 'public.users.deleted_at', false, 'ghostsync_0008', current_user)
  ON CONFLICT (kind, name) DO NOTHING;
  IF profiles_created THEN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
      REVOKE ALL ON TABLE public.users FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
      REVOKE TRUNCATE, REFERENCES, TRIGGER ON TABLE public.users FROM authenticated;
    END IF;
  END IF;
  IF audit_created AND pg_get_serial_sequence('public.cleanup_audit_log', 'id') IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC', pg_get_serial_sequence('public.cleanup_audit_log', 'id'));
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
      EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM anon', pg_get_serial_sequence('public.cleanup_audit_log', 'id'));
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
      EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM authenticated',
                     pg_get_serial_sequence('public.cleanup_audit_log', 'id'));
    END IF;
  END IF;
END
$ghostsync$;

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

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

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

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

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

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
  remembered text;
BEGIN
  -- On a public.users ghostsync adopted, the rows are the app's, and what a delete does to
  -- them is the app's key's (or nothing, without one): this sync leaves them, as the delete
  -- sync does from ghostsync_0011 on (issue 18: deletes while the upgrade runs).
  IF EXISTS (SELECT 1 FROM ghostsync.objects AS o
             WHERE o.kind = 'table' AND o.name = 'public.users' AND NOT o.created) THEN
    RETURN OLD;
  END IF;
  -- Only a profile table whose foreign key to auth.users does not cascade needs its
  -- profile removed before the delete (else that key refuses it). Should removing it
  -- fail, the key would refuse the delete all the same, so this runs without an
  -- exception block: no subtransaction per deleted account. A cascading key, or
  -- none, is left to the key and to ghostsync_on_auth_users_deleted. Whether there is
  -- such a key is read once a transaction, not once a row (the auth service's cleanup
  -- deletes 100 accounts in one statement): the DELETE holds a lock on auth.users
  -- under which no foreign key to it can be added or dropped until the transaction ends.
  remembered := pg_catalog.current_setting('ghostsync.profile_key_blocks_delete', true);
  IF remembered IS NULL OR remembered = '' THEN
    remembered := pg_catalog.set_config('ghostsync.profile_key_blocks_delete', (EXISTS (
      SELECT 1 FROM pg_catalog.pg_constraint AS c
      WHERE c.conrelid = pg_catalog.to_regclass('public.users') AND c.contype = 'f'
        AND c.confrelid = 'auth.users'::pg_catalog.regclass AND c.confdeltype <> 'c'
    ))::text, true);
  END IF;
  IF remembered = 'true' THEN
    DELETE FROM public.users WHERE id = OLD.id;
  END IF;
  RETURN OLD;
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
VALUES ('function', 'ghostsync.handle_user_deleted()', true, 'ghostsync_0008', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

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
BEGIN
  -- On a public.users ghostsync adopted, the rows are the app's, and what a delete does to
  -- them is the app's key's (or nothing, without one): this sync leaves them, as the delete
  -- sync does from ghostsync_0011 on (issue 18: deletes while the upgrade runs).
  IF EXISTS (SELECT 1 FROM ghostsync.objects AS o
             WHERE o.kind = 'table' AND o.name = 'public.users' AND NOT o.created) THEN
    RETURN NULL;
  END IF;
  -- Every account one DELETE removed, in one statement and one subtransaction
  -- (the auth service's cleanup deletes up to 100 anonymous users at once).
  BEGIN
    DELETE FROM public.users AS p USING deleted_users AS d WHERE p.id = d.id;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    BEGIN
      INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
      SELECT d.id, TG_OP, failed_state, failed_message FROM deleted_users AS d
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
VALUES ('function', 'ghostsync.handle_users_deleted()', true, 'ghostsync_0008', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / (SELECT 1 + count(*) FROM (SELECT g.t, g.n FROM pg_catalog.jsonb_array_elements_text(coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS g(t, n)) AS grants WHERE grants.t <> 'auth.users' AND pg_catalog.to_regclass(grants.t) IS NOT NULL AND grants.n < coalesce((SELECT min(h.n) FROM pg_catalog.jsonb_array_elements_text(coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS h(t, n) WHERE h.t = 'auth.users'), 2147483647))), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '400ms', true);

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
VALUES ('trigger', 'ghostsync_on_auth_user_created' || ' ON ' || 'auth.users', true, 'ghostsync_0008', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_guard$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_user_updated' AND NOT tgisinternal
  ) AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users'
  ) THEN
    RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
      'ghostsync_on_auth_user_updated', 'auth.users';
  END IF;
END
$ghostsync_guard$;

CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, deleted_at ON auth.users FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM (new.email)::text) OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM (new.email_confirmed_at IS NULL)) OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION ghostsync.handle_user_updated();

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('trigger', 'ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users', true, 'ghostsync_0008', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

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

CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_deleted BEFORE DELETE ON auth.users FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_user_deleted();

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('trigger', 'ghostsync_on_auth_user_deleted' || ' ON ' || 'auth.users', true, 'ghostsync_0008', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_guard$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_users_deleted' AND NOT tgisinternal
  ) AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_users_deleted' || ' ON ' || 'auth.users'
  ) THEN
    RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
      'ghostsync_on_auth_users_deleted', 'auth.users';
  END IF;
END
$ghostsync_guard$;

CREATE OR REPLACE TRIGGER ghostsync_on_auth_users_deleted AFTER DELETE ON auth.users REFERENCING OLD TABLE AS deleted_users FOR EACH STATEMENT EXECUTE FUNCTION ghostsync.handle_users_deleted();

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('trigger', 'ghostsync_on_auth_users_deleted' || ' ON ' || 'auth.users', true, 'ghostsync_0008', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_prerelease$
DECLARE
  old record;
BEGIN
  IF pg_catalog.current_setting('ghostsync.converting_prerelease', true) IS DISTINCT FROM 'on' THEN
    RETURN;
  END IF;
  FOR old IN
    SELECT t.tgname
    FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
    WHERE t.tgrelid = 'auth.users'::regclass AND NOT t.tgisinternal
      AND p.pronamespace = 'public'::regnamespace AND p.pronargs = 0
      AND (t.tgname::text, p.proname::text, pg_catalog.md5(p.prosrc)) IN (
        ('on_auth_user_created', 'handle_new_user', '413a2a3cfbd06bb99ef0358158f98b64'),
        ('on_auth_user_created', 'handle_new_user', 'd52e2fb86c1f6e78276943837a948e44'),
        ('on_auth_user_updated', 'handle_user_updated', 'db8a6f24ce00bbb1904c0a3f24584a0d'),
        ('on_auth_user_deleted', 'handle_user_deleted', '7ad153bb35108413607e9dcb5aaf44e9'))
  LOOP
    BEGIN
      EXECUTE pg_catalog.format('DROP TRIGGER %I ON auth.users', old.tgname);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION 'ghostsync: cannot drop the pre-release trigger % on auth.users: role % is not its owner '
        'and this database does not let it drop the trigger; hosted Supabase allows it through supautils '
        '(supautils.drop_trigger_grants); here run the upgrade as the owner or a superuser '
        '(DATABASE_URL of supabase_admin); nothing of this revision was applied', old.tgname, current_user;
    END;
  END LOOP;
  FOR old IN
    SELECT p.proname
    FROM pg_catalog.pg_proc AS p
    WHERE p.pronamespace = 'public'::regnamespace AND p.pronargs = 0
      AND (p.proname::text, pg_catalog.md5(p.prosrc)) IN (
        ('handle_new_user', '413a2a3cfbd06bb99ef0358158f98b64'),
        ('handle_new_user', 'd52e2fb86c1f6e78276943837a948e44'),
        ('handle_user_updated', 'db8a6f24ce00bbb1904c0a3f24584a0d'),
        ('handle_user_deleted', '7ad153bb35108413607e9dcb5aaf44e9'))
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgfoid = p.oid)
  LOOP
    EXECUTE pg_catalog.format('DROP FUNCTION public.%I()', old.proname);
  END LOOP;
END
$ghostsync_prerelease$;

RELEASE SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

