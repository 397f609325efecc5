SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 2), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '400ms', true);

DO $ghostsync$
DECLARE
  orphans bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM ghostsync.objects AS o
                 WHERE o.kind = 'table' AND o.name = 'public.users' AND o.created)
     OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.contype = 'f'
                  AND c.confrelid = 'auth.users'::pg_catalog.regclass
                  AND c.conkey = ARRAY[(SELECT a.attnum FROM pg_catalog.pg_attribute AS a
                                        WHERE a.attrelid = c.conrelid AND a.attname = 'id')]) THEN
    RETURN;
  END IF;
  SELECT pg_catalog.count(*) INTO orphans FROM public.users AS p
  WHERE NOT EXISTS (SELECT 1 FROM auth.users AS u WHERE u.id = p.id);
  IF orphans > 0 THEN
    RAISE EXCEPTION 'ghostsync: % profile(s) of public.users have no account (orphans), and the foreign key '
      'public.users(id) -> auth.users(id) that this downgrade puts back cannot hold them: run `ghostsync repair` '
      '(it deletes orphans), then downgrade again; nothing was changed', orphans;
  END IF;
  ALTER TABLE public.users ADD CONSTRAINT users_id_fkey
    FOREIGN KEY (id) REFERENCES auth.users (id) ON DELETE CASCADE;
END
$ghostsync$;

RELEASE SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

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

SAVEPOINT sa_savepoint_2;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '400ms', true);

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

RELEASE SAVEPOINT sa_savepoint_2;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

