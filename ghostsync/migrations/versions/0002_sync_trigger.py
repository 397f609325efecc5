"""Sync trigger: every new auth.users row gets its public.users profile.

Revision ID: ghostsync_0002
Revises: ghostsync_0001
Create Date: 2026-11-24

The function and trigger carry the incident report's names:
public.handle_new_user() and on_auth_user_created. The function is SECURITY
DEFINER so it can write public.users whatever role the auth service connects
as; its search_path is pinned to '' and every name in it is schema-qualified,
so an object planted on the writer's search_path cannot change what it does.
End users' API roles may not execute it.

Downgrade drops the trigger, then the function; no profile is touched.
"""

from __future__ import annotations

from ghostsync.migrations.kit import execute_guarded

revision = "ghostsync_0002"
down_revision = "ghostsync_0001"
branch_labels = None
depends_on = None

CREATE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
BEGIN
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

REVOKE ALL ON FUNCTION public.handle_new_user() FROM PUBLIC;
DO $ghostsync$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION public.handle_new_user() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION public.handle_new_user() FROM authenticated;
  END IF;
END
$ghostsync$;
"""

CREATE_TRIGGER = r"""
CREATE OR REPLACE TRIGGER on_auth_user_created
  AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();
"""

DROP_TRIGGER = "DROP TRIGGER IF EXISTS on_auth_user_created ON auth.users;"
DROP_FUNCTION = "DROP FUNCTION IF EXISTS public.handle_new_user();"

FUNCTIONS = {"public.handle_new_user()": CREATE_FUNCTION}
TRIGGERS = ("on_auth_user_created",)


def upgrade() -> None:
    execute_guarded(CREATE_FUNCTION, "create function public.handle_new_user()")
    execute_guarded(CREATE_TRIGGER, "create trigger on_auth_user_created on auth.users")


def downgrade() -> None:
    execute_guarded(DROP_TRIGGER, "drop trigger on_auth_user_created on auth.users")
    execute_guarded(DROP_FUNCTION, "drop function public.handle_new_user()")
