"""Profiles stay current: email, email_verified and deleted_at follow auth.users; hard deletes remove the profile.

Revision ID: ghostsync_0007
Revises: ghostsync_0006
Create Date: 2026-11-24

- on_auth_user_updated, AFTER UPDATE OF email, email_confirmed_at, deleted_at,
  fires only WHEN one of the synced values really changed (confirmation,
  email change, anonymous to permanent, soft delete). A sign-in or token
  refresh touches none of them and causes no profile write at all. If the
  profile is missing (a ghost), the update creates it.
- on_auth_user_deleted, BEFORE DELETE, removes the profile first. With
  ghostsync's own foreign key (ON DELETE CASCADE) that is a no-op; on an
  adopted table whose foreign key lacks CASCADE, or has none, it is what keeps
  the profile from outliving its account.

Both functions are SECURITY DEFINER with search_path '' and schema-qualified
names, never raise (a failure is recorded in ghostsync.sync_failures), and are
not executable by PUBLIC, anon or authenticated.

Downgrade drops both triggers, then both functions; no row is touched.
"""

from __future__ import annotations

from ghostsync.migrations.kit import execute_guarded

revision = "ghostsync_0007"
down_revision = "ghostsync_0006"
branch_labels = None
depends_on = None

CREATE_HANDLE_USER_UPDATED = r"""
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
$function$;
"""

CREATE_HANDLE_USER_DELETED = r"""
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
$function$;
"""

REVOKE_EXECUTE = r"""
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
$ghostsync$;
"""

CREATE_TRIGGERS = r"""
CREATE OR REPLACE TRIGGER on_auth_user_updated
  AFTER UPDATE OF email, email_confirmed_at, deleted_at ON auth.users
  FOR EACH ROW
  WHEN (OLD.email IS DISTINCT FROM NEW.email
        OR (OLD.email_confirmed_at IS NULL) IS DISTINCT FROM (NEW.email_confirmed_at IS NULL)
        OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
  EXECUTE FUNCTION public.handle_user_updated();
CREATE OR REPLACE TRIGGER on_auth_user_deleted
  BEFORE DELETE ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_user_deleted();
"""

DROP_TRIGGERS = r"""
DROP TRIGGER IF EXISTS on_auth_user_updated ON auth.users;
DROP TRIGGER IF EXISTS on_auth_user_deleted ON auth.users;
"""

DROP_FUNCTIONS = r"""
DROP FUNCTION IF EXISTS public.handle_user_updated();
DROP FUNCTION IF EXISTS public.handle_user_deleted();
"""

FUNCTIONS = {
    "public.handle_user_updated()": CREATE_HANDLE_USER_UPDATED,
    "public.handle_user_deleted()": CREATE_HANDLE_USER_DELETED,
}
TRIGGERS = ("on_auth_user_updated", "on_auth_user_deleted")


def upgrade() -> None:
    execute_guarded(CREATE_HANDLE_USER_UPDATED, "create function public.handle_user_updated()")
    execute_guarded(CREATE_HANDLE_USER_DELETED, "create function public.handle_user_deleted()")
    execute_guarded(REVOKE_EXECUTE, "revoke EXECUTE on the sync functions")
    execute_guarded(CREATE_TRIGGERS, "create triggers on_auth_user_updated and on_auth_user_deleted")


def downgrade() -> None:
    execute_guarded(DROP_TRIGGERS, "drop triggers on_auth_user_updated and on_auth_user_deleted")
    execute_guarded(DROP_FUNCTIONS, "drop functions handle_user_updated and handle_user_deleted")
