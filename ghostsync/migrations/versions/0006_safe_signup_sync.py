"""Signups never fail because of ghostsync: a failed profile write is recorded, not raised.

Revision ID: ghostsync_0006
Revises: ghostsync_0005
Create Date: 2026-11-24

The auth service signs a user up in one transaction; any error raised by a
trigger rolls it back and the user sees "Database error saving new user".
From this revision on, ghostsync.handle_new_user() writes the profile inside its
own exception block: if that write fails for any reason (a UNIQUE email the
app added, an app trigger or constraint, a missing table), the error is
recorded in ghostsync.sync_failures and the signup commits. Were even that
record impossible, the function raises a WARNING and still lets the signup
through. The profile now also carries deleted_at. As in ghostsync_0002, an
adopted public.users beside an app trigger on auth.users that inserts into
public.users gets no profile from this function: the app's trigger writes it.

Downgrade restores ghostsync_0002's function text exactly.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0006"
down_revision = "ghostsync_0005"
branch_labels = None
depends_on = None

SAFE_HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
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

# ghostsync_0002's text, verbatim.
PREVIOUS_HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
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
""")

DECLARES = kit.Declares(
    columns=(kit.Column("deleted_at", "{row}.deleted_at", "timestamptz", nullable=True),),
    functions=(SAFE_HANDLE_NEW_USER,),
)


def upgrade() -> None:
    # CREATE OR REPLACE keeps the function's owner and grants (EXECUTE stays revoked).
    kit.install_function(SAFE_HANDLE_NEW_USER, revision)


def downgrade() -> None:
    kit.install_function(PREVIOUS_HANDLE_NEW_USER, "ghostsync_0002")
