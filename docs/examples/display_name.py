"""Profiles carry display_name, from raw_user_meta_data ->> 'full_name'

Revision ID: example_display_name
Revises: ghostsync_0009
Create Date: 2026-11-25 12:00:00

Profiles carry display_name: the user's full name as the app's signup form
stores it (raw_user_meta_data ->> 'full_name'), at most 100 characters, kept
in sync on signup and on every change of the metadata. End users write that
metadata themselves: the column is display text, never used for authorization.

- public.users.display_name (text) is added, or an existing column adopted if
  it takes 100 characters and NULL; otherwise the upgrade stops with one line
  before changing anything.
- ghostsync.handle_new_user() and handle_user_updated() write it;
  ghostsync_on_auth_user_updated also fires when the full name changes.
- Existing profiles are filled by the data revision that follows this one.

- Functions: SECURITY DEFINER, SET search_path = '', every name
  schema-qualified; a trigger function never raises (a failed profile write
  is recorded in ghostsync.sync_failures, so the auth service's write goes
  through). kit.install_function keeps EXECUTE revoked from PUBLIC, anon and
  authenticated and records the function as ghostsync's.
- Lock safety: functions first (they lock no table), then ONE lock step, last:
  the triggers on auth.users, then the new columns of public.users. A busy
  table is retried under the lock budget with no lock held in between. A
  backfill never goes here: it is a revision of its own
  (`ghostsync revision --data-job NAME`), so it never shares a transaction
  with this DDL.
- raw_user_meta_data is written by end users: copy it as display text only,
  bounded in length, never for authorization.

Downgrade restores ghostsync_0009's function texts and trigger definitions exactly;
the columns this revision adds keep their values.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "example_display_name"
down_revision = "ghostsync_0009"
branch_labels = None
depends_on = None

# -- what ghostsync_0009 leaves in place, verbatim (chain.declared_at('ghostsync_0009')) --
# downgrade() puts these back exactly. Never edit them, never import them from another revision.
# When this revision leaves a function or trigger unchanged, delete its PREVIOUS_ text, its new
# copy below, and its lines in DECLARES and downgrade().

# declared by ghostsync_0008
PREVIOUS_HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
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

# declared by ghostsync_0008
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




# declared by ghostsync_0007
PREVIOUS_ON_AUTH_USER_UPDATED = kit.Trigger(
    "ghostsync_on_auth_user_updated", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, "
    "deleted_at ON auth.users FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM "
    "(new.email)::text) OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM "
    "(new.email_confirmed_at IS NULL)) OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE "
    "FUNCTION ghostsync.handle_user_updated()",
)



# -- this revision's texts: edit these -------------------------------------------------------
# Copies of the texts above. A trigger's definition is exactly what pg_get_triggerdef prints for it
# under search_path '' (status compares the two; docs/FOLLOW-UP-REVISIONS.md shows how to get it).
# A new function or trigger goes here too, into DECLARES, and into downgrade() as a drop.

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
  BEGIN
    -- A plain INSERT: a profile already there (the app's, a backfill's) is a unique
    -- violation, taken below for the success it is; no speculative insertion.
    INSERT INTO public.users (id, email, email_verified, deleted_at, display_name, created_at, updated_at)
    VALUES (
      NEW.id,
      NEW.email,
      NEW.email_confirmed_at IS NOT NULL,
      NEW.deleted_at,
      pg_catalog.left(NEW.raw_user_meta_data ->> 'full_name', 100),
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
        display_name = pg_catalog.left(NEW.raw_user_meta_data ->> 'full_name', 100),
        updated_at = pg_catalog.now()
    WHERE id = NEW.id;
    IF NOT FOUND THEN
      -- The profile may be being written right now by another transaction (a
      -- backfill batch that read this account before this change): wait for it,
      -- then write this row's values over it. The newest auth row always wins.
      INSERT INTO public.users (id, email, email_verified, deleted_at, display_name, created_at, updated_at)
      VALUES (
        NEW.id,
        NEW.email,
        NEW.email_confirmed_at IS NOT NULL,
        NEW.deleted_at,
        pg_catalog.left(NEW.raw_user_meta_data ->> 'full_name', 100),
        coalesce(NEW.created_at, pg_catalog.now()),
        pg_catalog.now()
      )
      ON CONFLICT (id) DO UPDATE
        SET email = EXCLUDED.email,
            email_verified = EXCLUDED.email_verified,
            deleted_at = EXCLUDED.deleted_at,
            display_name = EXCLUDED.display_name,
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




ON_AUTH_USER_UPDATED = kit.Trigger(
    "ghostsync_on_auth_user_updated", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, "
    "deleted_at, raw_user_meta_data ON auth.users FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT "
    "FROM (new.email)::text) OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM "
    "(new.email_confirmed_at IS NULL)) OR (old.deleted_at IS DISTINCT FROM new.deleted_at) OR "
    "((old.raw_user_meta_data ->> 'full_name'::text) IS DISTINCT FROM (new.raw_user_meta_data ->> "
    "'full_name'::text)))) EXECUTE FUNCTION ghostsync.handle_user_updated()",
)



# New profile columns the sync writes, each derived from the auth row ({row}), e.g.
#   DISPLAY_NAME = kit.Column("display_name", "pg_catalog.left({row}.raw_user_meta_data ->> 'full_name', 100)",
#                             "text", nullable=True, max_length=100)
#   COLUMNS = (DISPLAY_NAME,)
# upgrade() adds each, or adopts an existing one only if it takes every value the sync writes
# (type, length, NULL), else stops with one line before changing anything. Fill existing
# profiles in a data revision of its own: `ghostsync revision --data-job backfill_<column>`.
DISPLAY_NAME = kit.Column(
    "display_name", "pg_catalog.left({row}.raw_user_meta_data ->> 'full_name', 100)", "text",
    nullable=True, max_length=100,
)
COLUMNS: tuple[kit.Column, ...] = (DISPLAY_NAME,)

# What ghostsync status, repair, backfill and the drift check read once the database is at this
# revision: the columns it syncs, and the functions and triggers it installs. Extend it with
# what you add; list in removes= what you drop.
DECLARES = kit.Declares(
    columns=COLUMNS,
    functions=(
        HANDLE_NEW_USER,
        HANDLE_USER_UPDATED,
    ),
    triggers=(
        ON_AUTH_USER_UPDATED,
    ),
)


def upgrade() -> None:
    # Functions first: CREATE OR REPLACE FUNCTION locks no table the auth service or the app uses.
    for function in DECLARES.functions:
        kit.install_function(function, revision)
    # Then ONE lock step, last, so its locks are held only until this revision commits and a busy
    # table is retried with no lock held: the triggers on auth.users first, then the columns of
    # public.users (the order a signup locks them in, so no signup in flight waits on this step
    # while holding what it waits for).
    tables = {trigger.table for trigger in DECLARES.triggers} | ({"public.users"} if COLUMNS else set())
    if tables:
        kit.step(
            "\n".join([*(kit.trigger_sql(trigger, revision) for trigger in DECLARES.triggers),
                       *(kit.column_sql(column, revision) for column in COLUMNS)]),
            f"create the triggers and add the columns of {revision}",
            locks=str(len(tables)),
        )


def downgrade() -> None:
    # ghostsync_0009's texts, exactly, each recorded again under the revision that declared it:
    # functions first, then the triggers in ONE lock step. What this revision adds is dropped here
    # (kit.drop_triggers((name, ...), table, functions=(signature, ...))); its columns stay, with
    # their values: no downgrade deletes data.
    kit.install_function(PREVIOUS_HANDLE_NEW_USER, "ghostsync_0008")
    kit.install_function(PREVIOUS_HANDLE_USER_UPDATED, "ghostsync_0008")
    kit.step("\n".join((
        kit.trigger_sql(PREVIOUS_ON_AUTH_USER_UPDATED, "ghostsync_0007"),
    )), "restore the triggers of ghostsync_0009 on auth.users", locks="1")
