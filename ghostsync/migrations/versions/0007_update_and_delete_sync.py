"""Profiles stay current: email, email_verified and deleted_at follow auth.users; hard deletes remove the profile.

Revision ID: ghostsync_0007
Revises: ghostsync_0006
Create Date: 2026-11-24

- ghostsync_on_auth_user_updated, AFTER UPDATE OF email, email_confirmed_at, deleted_at,
  fires only WHEN one of the synced values really changed (confirmation,
  email change, anonymous to permanent, soft delete). A sign-in or token
  refresh touches none of them and causes no profile write at all. If the
  profile is missing (a ghost), the update creates it.
- ghostsync_on_auth_user_deleted, BEFORE DELETE, removes the profile first. With
  ghostsync's own foreign key (ON DELETE CASCADE) that is a no-op. On a table
  ghostsync adopted it does nothing: the rows and what a delete does to them
  are the app's (its key refuses the delete, cascades, or keeps the row), as
  from ghostsync_0011 on (issue 18).

Both functions are SECURITY DEFINER with search_path '' and schema-qualified
names, never raise (a failure is recorded in ghostsync.sync_failures), and are
not executable by PUBLIC, anon or authenticated.

Downgrade drops both triggers, then both functions; no row is touched.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0007"
down_revision = "ghostsync_0006"
branch_labels = None
depends_on = None

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

DECLARES = kit.Declares(
    functions=(HANDLE_USER_UPDATED, HANDLE_USER_DELETED),
    triggers=(ON_AUTH_USER_UPDATED, ON_AUTH_USER_DELETED),
)


def upgrade() -> None:
    kit.install_function(HANDLE_USER_UPDATED, revision)
    kit.install_function(HANDLE_USER_DELETED, revision)
    kit.install_triggers((ON_AUTH_USER_UPDATED, ON_AUTH_USER_DELETED), revision)


def downgrade() -> None:
    kit.drop_triggers(("ghostsync_on_auth_user_updated", "ghostsync_on_auth_user_deleted"), "auth.users",
                      functions=("ghostsync.handle_user_updated()", "ghostsync.handle_user_deleted()"))
