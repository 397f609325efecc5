"""Hard deletes keep the app's rules: ghostsync removes only its own profiles, after the delete really happened.

Revision ID: ghostsync_0011
Revises: ghostsync_0010
Create Date: 2026-12-07

What happens to a profile when its account is hard-deleted now depends on
who owns public.users and what its key on ``id`` says (the key on ``id``
only: another column's key to auth.users, such as an app's ``referred_by``,
does not count):

- public.users that ghostsync created: ghostsync removes the profiles. Its
  own ``ON DELETE CASCADE`` key (from ghostsync_0001) is dropped here: a
  cascade cannot be caught, so an app table whose key to public.users is
  DEFERRABLE INITIALLY DEFERRED made the auth service's delete fail at
  COMMIT (the anonymous-user cleanup: every batch, for good). The statement
  trigger ghostsync_on_auth_users_deleted now deletes the profiles of every
  account one DELETE removed, in one statement and one subtransaction, and
  checks the deferrable keys that reference public.users inside that
  subtransaction; a profile that cannot go stays (an orphan) and is
  recorded in ghostsync.sync_failures with the key's error, and the
  delete succeeds.
- an adopted public.users: ghostsync deletes nothing. A cascading key
  removes the profile; a key that does not cascade refuses the delete while
  the profile exists, as it does without ghostsync (the app's rule); a
  table without a key keeps its rows (they are the app's: ``ghostsync
  status`` reports them as the app's rows kept, and ``repair`` leaves them).
- the BEFORE DELETE row trigger ghostsync_on_auth_user_deleted removed the
  profile before the delete, even of a row an app's BEFORE DELETE trigger
  then kept (a soft delete), and trusted a cached answer from a setting any
  client could set. A row a BEFORE trigger keeps is not in the statement
  trigger's transition table: its profile is not touched. The trigger keeps
  its name with a new job (CREATE OR REPLACE TRIGGER, which the TRIGGER
  privilege allows; dropping a trigger on auth.users takes its owner, which
  today's Supabase roles without supautils do not give ``postgres``): AFTER
  TRUNCATE ON auth.users, ghostsync.handle_user_deleted() deletes the
  profiles the truncated accounts leave in the table ghostsync created (what
  its key did for TRUNCATE ... CASCADE).

Downgrade puts back ghostsync_0008's texts and triggers exactly, and
ghostsync_0001's key on a table ghostsync created (refused, with one line,
while that table holds a profile whose account is gone); no row is touched.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0011"
down_revision = "ghostsync_0010"
branch_labels = None
depends_on = None

# The key ghostsync_0001 created: on public.users(id), to auth.users(id), ON DELETE CASCADE;
# dropped only on a table ghostsync created, and only while it is exactly that key.
DROP_OWN_KEY = r"""
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
"""

RESTORE_OWN_KEY = r"""
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
"""

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
""")

HANDLE_USER_DELETED = kit.Function("ghostsync.handle_user_deleted()", r"""
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
""")

ON_AUTH_USER_DELETED = kit.Trigger(
    "ghostsync_on_auth_user_deleted", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_deleted AFTER TRUNCATE ON auth.users "
    "FOR EACH STATEMENT EXECUTE FUNCTION ghostsync.handle_user_deleted()",
)

DECLARES = kit.Declares(
    functions=(HANDLE_USERS_DELETED, HANDLE_USER_DELETED),
    triggers=(ON_AUTH_USER_DELETED,),
)

# ghostsync_0008's texts and trigger, verbatim.
PREVIOUS_HANDLE_USER_DELETED = kit.Function("ghostsync.handle_user_deleted()", r"""
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

PREVIOUS_HANDLE_USERS_DELETED = kit.Function("ghostsync.handle_users_deleted()", r"""
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

PREVIOUS_ON_AUTH_USER_DELETED = kit.Trigger(
    "ghostsync_on_auth_user_deleted", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_deleted BEFORE DELETE ON auth.users "
    "FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_user_deleted()",
)


def upgrade() -> None:
    kit.install_function(HANDLE_USERS_DELETED, revision)
    kit.install_function(HANDLE_USER_DELETED, revision)
    kit.install_triggers((ON_AUTH_USER_DELETED,), revision)
    kit.step(DROP_OWN_KEY, "drop ghostsync's own foreign key public.users(id) -> auth.users(id)", locks="2")


def downgrade() -> None:
    kit.step(RESTORE_OWN_KEY, "put back ghostsync's own foreign key public.users(id) -> auth.users(id)", locks="2")
    kit.install_function(PREVIOUS_HANDLE_USER_DELETED, "ghostsync_0008")
    kit.install_function(PREVIOUS_HANDLE_USERS_DELETED, "ghostsync_0008")
    kit.install_triggers((PREVIOUS_ON_AUTH_USER_DELETED,), "ghostsync_0008")
