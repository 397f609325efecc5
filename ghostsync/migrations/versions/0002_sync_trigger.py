"""Sync trigger: every new auth.users row gets its public.users profile.

Revision ID: ghostsync_0002
Revises: ghostsync_0001
Create Date: 2026-11-24

The incident report names these public.handle_new_user() and
on_auth_user_created; Supabase's own guide tells apps to use those very
names for their own profiles table, so ghostsync's live apart:
``ghostsync.handle_new_user()`` (in the private schema the Data API does not
expose) and the trigger ``ghostsync_on_auth_user_created``. An app's
function or trigger of the report's names is left as it is and keeps
working beside ghostsync's.

The function is SECURITY DEFINER so it can write public.users whatever role
the auth service connects as; its search_path is pinned to '' and every name
in it is schema-qualified, so an object planted on the writer's search_path
cannot change what it does. End users' API roles may not execute it.

On a public.users ghostsync adopted (0001) beside an app trigger of its own on
auth.users that inserts into public.users (a match on its function's text),
the function writes nothing: that trigger may insert the profile plainly after
this one, and would then fail the signup on the key. The profile is the app's to write there; ghostsync's columns of it
come with the update sync, ghostsync_0009's resync and ghostsync_0010, whose
syncs fire at COMMIT, after every app trigger (issue 18: signups while the
upgrade runs).

Downgrade drops the trigger, then the function (only ghostsync's, per
ghostsync.objects); no profile is touched.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0002"
down_revision = "ghostsync_0001"
branch_labels = None
depends_on = None

HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
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

ON_AUTH_USER_CREATED = kit.Trigger(
    "ghostsync_on_auth_user_created", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users "
    "FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_new_user()",
)

DECLARES = kit.Declares(
    columns=(
        kit.Column("email", "{row}.email", "text", nullable=True, max_length=255),
        kit.Column("email_verified", "{row}.email_confirmed_at IS NOT NULL", "boolean", nullable=False),
        kit.Column("created_at", "coalesce({row}.created_at, pg_catalog.now())", "timestamptz",
                   nullable=False, synced=False),
        kit.Column("updated_at", "coalesce({row}.updated_at, {row}.created_at, pg_catalog.now())", "timestamptz",
                   nullable=False, synced=False, on_update="pg_catalog.now()"),
    ),
    functions=(HANDLE_NEW_USER,),
    triggers=(ON_AUTH_USER_CREATED,),
)


def upgrade() -> None:
    kit.install_function(HANDLE_NEW_USER, revision)
    kit.install_triggers((ON_AUTH_USER_CREATED,), revision)


def downgrade() -> None:
    kit.drop_triggers(("ghostsync_on_auth_user_created",), "auth.users", functions=("ghostsync.handle_new_user()",))
