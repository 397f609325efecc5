"""Profiles equal to auth.users under concurrency, deferred app constraints, bulk deletes; pre-release installs converted.

Revision ID: ghostsync_0008
Revises: ghostsync_0007
Create Date: 2026-11-25

- ghostsync.handle_user_updated(): when the profile is not there yet, the
  insert waits for a profile another transaction is writing (a backfill
  batch that read the account before a confirmation) and then writes the
  newest values over it (ON CONFLICT DO UPDATE), instead of keeping the
  backfill's stale copy for good.
- ghostsync.handle_new_user() and handle_user_updated(): a constraint of the
  app's profile table that is DEFERRABLE INITIALLY DEFERRED is checked inside
  the function's exception block (SET CONSTRAINTS ... IMMEDIATE, then back to
  DEFERRED), not at COMMIT where it would fail the signup. As since
  ghostsync_0002, it writes nothing on an adopted public.users beside an app
  trigger on auth.users that inserts into public.users.
- Hard deletes: ghostsync_on_auth_users_deleted, AFTER DELETE FOR EACH
  STATEMENT with the deleted rows as a transition table, removes the
  profiles of every account one DELETE removed in one statement and one
  subtransaction (the auth service's anonymous-user cleanup deletes up to
  100 users at once: one subtransaction per row would overflow the 64-entry
  subtransaction cache). The BEFORE DELETE row trigger now acts only where
  the profile table's foreign key to auth.users does not cascade, and needs
  no subtransaction there.
- On a table ghostsync adopted, neither delete sync touches a row (as in
  ghostsync_0007, and from ghostsync_0011 on): the app's key decides.
- Databases installed by ghostsync before its first release (functions in
  public, triggers named on_auth_user_*, no ghostsync.objects) are converted:
  the register is created and filled, the objects above are installed under
  ghostsync's names, and the pre-release triggers and functions are dropped
  when their text is exactly what the pre-release ghostsync installed (an
  app's function of the same name is left alone). Privileges the
  pre-release install left open on tables it created are closed.

Downgrade restores ghostsync_0006's and ghostsync_0007's function texts
exactly and drops the statement trigger and its function; no row is touched.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0008"
down_revision = "ghostsync_0007"
branch_labels = None
depends_on = None

# A database the pre-release ghostsync installed has no register. Its objects are
# recognised by their exact text (md5 of pg_proc.prosrc), never by name alone.
CONVERT_PRERELEASE_REGISTER = r"""
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
"""

DROP_PRERELEASE_OBJECTS = r"""
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
"""

HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
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
""")

HANDLE_USER_UPDATED = kit.Function("ghostsync.handle_user_updated()", r"""
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
""")

HANDLE_USER_DELETED = kit.Function("ghostsync.handle_user_deleted()", r"""
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
""")

HANDLE_USERS_DELETED = kit.Function("ghostsync.handle_users_deleted()", r"""
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
""")

# Unchanged since ghostsync_0002 / ghostsync_0007; installed here for databases
# converted from a pre-release install, which have them under other names.
ON_AUTH_USER_CREATED = kit.Trigger(
    "ghostsync_on_auth_user_created", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users "
    "FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_new_user()",
)
ON_AUTH_USER_UPDATED = kit.Trigger(
    "ghostsync_on_auth_user_updated", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, deleted_at "
    "ON auth.users FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM (new.email)::text) "
    "OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM (new.email_confirmed_at IS NULL)) "
    "OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION ghostsync.handle_user_updated()",
)
ON_AUTH_USER_DELETED = kit.Trigger(
    "ghostsync_on_auth_user_deleted", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_deleted BEFORE DELETE ON auth.users "
    "FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_user_deleted()",
)
ON_AUTH_USERS_DELETED = kit.Trigger(
    "ghostsync_on_auth_users_deleted", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_users_deleted AFTER DELETE ON auth.users "
    "REFERENCING OLD TABLE AS deleted_users FOR EACH STATEMENT EXECUTE FUNCTION ghostsync.handle_users_deleted()",
)

DECLARES = kit.Declares(
    functions=(HANDLE_NEW_USER, HANDLE_USER_UPDATED, HANDLE_USER_DELETED, HANDLE_USERS_DELETED),
    triggers=(ON_AUTH_USERS_DELETED,),
)

# ghostsync_0006's and ghostsync_0007's texts, verbatim.
PREVIOUS_HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
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
$function$;
""")

PREVIOUS_HANDLE_USER_UPDATED = kit.Function("ghostsync.handle_user_updated()", r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_user_updated()
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
$function$;
""")

PREVIOUS_HANDLE_USER_DELETED = kit.Function("ghostsync.handle_user_deleted()", r"""
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
  -- On a public.users ghostsync adopted, the rows are the app's, and what a delete does to
  -- them is the app's key's (or nothing, without one): this sync leaves them, as the delete
  -- sync does from ghostsync_0011 on (issue 18: deletes while the upgrade runs).
  IF EXISTS (SELECT 1 FROM ghostsync.objects AS o
             WHERE o.kind = 'table' AND o.name = 'public.users' AND NOT o.created) THEN
    RETURN OLD;
  END IF;
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
$function$;
""")


def upgrade() -> None:
    kit.step(CONVERT_PRERELEASE_REGISTER, "convert a pre-release install: the register")
    for function in DECLARES.functions:
        kit.install_function(function, revision)
    triggers = (ON_AUTH_USER_CREATED, ON_AUTH_USER_UPDATED, ON_AUTH_USER_DELETED, ON_AUTH_USERS_DELETED)
    kit.step(
        "\n".join(kit.trigger_sql(trigger, revision) for trigger in triggers) + "\n" + DROP_PRERELEASE_OBJECTS,
        "create the triggers on auth.users (and drop a pre-release install's)",
        locks=kit.trigger_drop_locks("auth.users"),
    )


def downgrade() -> None:
    kit.install_function(PREVIOUS_HANDLE_NEW_USER, "ghostsync_0006")
    kit.install_function(PREVIOUS_HANDLE_USER_UPDATED, "ghostsync_0007")
    kit.install_function(PREVIOUS_HANDLE_USER_DELETED, "ghostsync_0007")
    kit.drop_triggers(("ghostsync_on_auth_users_deleted",), "auth.users",
                      functions=("ghostsync.handle_users_deleted()",))
