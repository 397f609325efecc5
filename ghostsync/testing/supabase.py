"""Make a throwaway server look like a Supabase database.

The facts come from ``shared/SUPABASE.md``: the roles and their attributes,
the ``auth`` schema owned by ``supabase_admin``, ``auth.users`` owned by
``supabase_auth_admin`` with row level security on, and the default
privileges that open everything new in ``public`` to the API roles.

``CLUSTER_SQL`` runs once per server (roles are global); ``DATABASE_SQL`` runs
in each database, as the superuser. Both are idempotent.
"""

from __future__ import annotations

import psycopg2

CLUSTER_SQL = """
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postgres') THEN
    -- demoted on hosted Supabase: no SUPERUSER, no BYPASSRLS
    CREATE ROLE postgres LOGIN CREATEDB CREATEROLE REPLICATION;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supabase_auth_admin') THEN
    CREATE ROLE supabase_auth_admin LOGIN NOINHERIT CREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
    CREATE ROLE authenticator LOGIN NOINHERIT;
  END IF;
END
$roles$;
ALTER ROLE supabase_auth_admin SET search_path = auth;
GRANT anon, authenticated, service_role TO authenticator;
GRANT supabase_auth_admin TO postgres;
"""

# Database privileges are not copied from a template: run this in every clone too.
DATABASE_GRANTS_SQL = """
DO $grants$
BEGIN
  EXECUTE format('GRANT CONNECT, CREATE, TEMPORARY ON DATABASE %I TO postgres', current_database());
END
$grants$;
"""

DATABASE_SQL = DATABASE_GRANTS_SQL + """
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;
GRANT USAGE, CREATE ON SCHEMA auth TO supabase_auth_admin;
GRANT USAGE ON SCHEMA auth TO postgres;

GRANT ALL ON SCHEMA public TO postgres;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
  GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
  GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;

SET ROLE supabase_auth_admin;
CREATE TABLE IF NOT EXISTS auth.users (
  instance_id uuid NULL,
  id uuid NOT NULL PRIMARY KEY,
  aud varchar(255) NULL,
  "role" varchar(255) NULL,
  email varchar(255) NULL,
  encrypted_password varchar(255) NULL,
  email_confirmed_at timestamptz NULL,
  invited_at timestamptz NULL,
  confirmation_token varchar(255) NULL,
  confirmation_sent_at timestamptz NULL,
  recovery_token varchar(255) NULL,
  recovery_sent_at timestamptz NULL,
  email_change_token_new varchar(255) NULL,
  email_change varchar(255) NULL,
  email_change_sent_at timestamptz NULL,
  last_sign_in_at timestamptz NULL,
  raw_app_meta_data jsonb NULL,
  raw_user_meta_data jsonb NULL,
  is_super_admin bool NULL,
  created_at timestamptz NULL,
  updated_at timestamptz NULL,
  phone text NULL UNIQUE DEFAULT NULL,
  phone_confirmed_at timestamptz NULL,
  phone_change text NULL DEFAULT '',
  phone_change_token varchar(255) NULL DEFAULT '',
  phone_change_sent_at timestamptz NULL,
  confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
  email_change_token_current varchar(255) NULL DEFAULT '',
  email_change_confirm_status smallint NULL DEFAULT 0
    CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
  banned_until timestamptz NULL,
  reauthentication_token varchar(255) NULL DEFAULT '',
  reauthentication_sent_at timestamptz NULL,
  is_sso_user boolean NOT NULL DEFAULT false,
  deleted_at timestamptz NULL,
  is_anonymous boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_partial_key ON auth.users (email) WHERE (is_sso_user = false);
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users (is_anonymous);
CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users (instance_id);
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
RESET ROLE;
"""


# The profile table a typical app already has before it installs ghostsync,
# created by the app as ``postgres`` (the demo and the tests seed with it).
APP_PROFILES_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  email text,
  email_verified boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""


def make_cluster_supabase_like(superuser_dsn: str) -> None:
    """Create Supabase's roles on the server behind ``superuser_dsn``."""
    _run(superuser_dsn, CLUSTER_SQL)


def make_database_supabase_like(superuser_dsn: str) -> None:
    """Create the ``auth`` schema, ``auth.users`` and Supabase's grants in one database."""
    _run(superuser_dsn, DATABASE_SQL)


def grant_database_privileges(superuser_dsn: str) -> None:
    """Give ``postgres`` what Supabase gives it on its database (CREATE for its own schemas)."""
    _run(superuser_dsn, DATABASE_GRANTS_SQL)


def _run(dsn: str, sql: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()
