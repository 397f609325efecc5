"""Make a throwaway server look like a Supabase database, in one of three role setups.

The facts come from the upstream sources: supabase/postgres' init scripts and
migrations, supabase/auth's migrations, and supabase/supautils' source. Roles are
global to a server, so each server has exactly one role setup; ``ROLE_SETUPS``
names them:

``"membership"``
    Projects created before 2025-04 (images before supabase/postgres migration
    ``20250421084701_revoke_admin_roles_from_postgres``): ``postgres`` is a member
    of ``supabase_auth_admin`` and has CREATE on schema ``auth``, so it can create
    and drop triggers on ``auth.users`` as if it owned it.
``"current"``
    Today's roles without supautils: that membership is revoked, ``postgres`` has
    only USAGE on schema ``auth`` but keeps ALL privileges (TRIGGER included) on
    the auth tables, so CREATE TRIGGER on ``auth.users`` works and DROP TRIGGER
    fails with PostgreSQL's own ``must be owner of relation users`` (42501).
``"hosted"`` (the default)
    ``"current"`` plus a model of supautils' ``drop_trigger_grants``, which hosted
    Supabase preloads: ``postgres`` may drop triggers on the tables of its grant
    list, and on the way takes ACCESS EXCLUSIVE locks on them.

Common to all three (``CLUSTER_SQL``/``DATABASE_SQL`` are the ``"hosted"`` text):

- ``supabase_admin`` is the bootstrap superuser (see ``server.py``) and owns schema
  ``auth``. Its role-level search_path on Supabase (``"$user", public, auth,
  extensions``) is left out: the tests inspect the database as this role, and
  ``regclass``/``pg_get_constraintdef`` output would then drop the ``auth.`` prefix.
- ``postgres``: NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS,
  search_path ``"$user", public, extensions``, member of anon, authenticated and
  service_role (WITH ADMIN OPTION on PostgreSQL 16+ in "current"/"hosted",
  migration 20250605172253), of pg_read_all_data and pg_signal_backend.
- ``supabase_auth_admin``: LOGIN NOINHERIT (CREATEROLE in "membership", NOCREATEROLE
  in "current"/"hosted" after migration 20260821154147), search_path ``auth``,
  ``idle_in_transaction_session_timeout = 60000`` (60 s); owns every auth table.
- ``anon`` (statement_timeout 3s), ``authenticated`` (8s): NOLOGIN INHERIT;
  ``service_role``: NOLOGIN INHERIT BYPASSRLS; ``authenticator``: LOGIN NOINHERIT,
  member of the three, statement_timeout and lock_timeout 8s.
- Default privileges in ``public``, for objects created by ``postgres`` and by
  ``supabase_admin``: ALL on tables, sequences and functions to postgres, anon,
  authenticated and service_role.
- Schema ``extensions`` (USAGE for postgres and the API roles).
- Schema ``auth`` with the tables the auth service (GoTrue) writes, as its own
  migrations leave them: users, identities, sessions, refresh_tokens,
  audit_log_entries, one_time_tokens, mfa_amr_claims, instances,
  schema_migrations; the types aal_level and one_time_token_type; the functions
  uid(), role(), email(), jwt(). All owned by ``supabase_auth_admin``, RLS on,
  ``postgres`` granted ALL on them (SELECT WITH GRANT OPTION, GoTrue
  20240612123726), except ``auth.schema_migrations`` in "current"/"hosted".

Left out: the storage and realtime schemas and their admin roles, ``dashboard_user``,
``pg_monitor`` membership, authenticator's ``session_preload_libraries = safeupdate``,
the auth tables no modelled path writes (mfa_factors, mfa_challenges, flow_state,
sso_*, saml_*, oauth_*, webauthn_*), and the foreign key of ``sessions.oauth_client_id``
(its table is one of those).

What the supautils model (``"hosted"``) reproduces, and what it does not
------------------------------------------------------------------------
supautils (C, loaded with ``session_preload_libraries``) is packaged neither for
Debian nor for PyPI, so it is modelled with what PostgreSQL offers: a
placeholder setting and two event triggers owned by ``supabase_admin``.

Modelled:

- ``SHOW supautils.drop_trigger_grants`` (and ``current_setting(...)``) shows the
  11-entry grant list of the older platform config, set with ALTER SYSTEM:
  ``{"postgres": [auth.audit_log_entries, auth.identities, auth.refresh_tokens,
  auth.sessions, auth.users, realtime.messages, storage.buckets,
  storage.migrations, storage.objects, storage.s3_multipart_uploads,
  storage.s3_multipart_uploads_parts]}``.
- When a non-superuser runs DROP TRIGGER, the ddl_command_start event trigger
  ``supautils_drop_trigger_grants`` first takes ACCESS EXCLUSIVE on the target
  table (a missing target table is an ERROR 42P01 even with IF EXISTS, as
  supautils' ``RangeVarGetRelid(..., missing_ok=false)`` makes it). If the role has
  a grant list, it then takes ACCESS EXCLUSIVE on each listed table that exists,
  in config order, stopping at the target (so for ``auth.users``: users, then
  audit_log_entries, identities, refresh_tokens, sessions); when the target is
  not listed, it locks every listed table and leaves the drop to PostgreSQL's
  ownership check. Every lock is a ``LOCK TABLE``, so it honours the caller's
  ``lock_timeout`` (55P03) and ``statement_timeout``, and is held to the end of
  the transaction, as supautils' locks are.
- When the target is listed, the drop succeeds as if run by a privileged role:
  the event trigger lends the table owner's role (``supabase_auth_admin``) to the
  dropping role for that one statement, and the ddl_command_end event trigger
  ``supautils_drop_trigger_grants_end`` takes it back. If the drop fails, the
  (sub)transaction rolls back and the loan with it. No membership survives the
  statement: ``pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER')`` is false
  before and after, in the same transaction too.
- Without a grant (another role, or a table not in the list) the drop fails with
  PostgreSQL's ``must be owner of relation ...`` (42501), as with supautils.

Not modelled:

- supautils runs the drop as ``supabase_admin`` (a superuser); the model runs it
  as the caller with the owner's role lent. Things that look at the current role
  during the drop (other event triggers, ``sql_drop`` handlers) see ``postgres``,
  not ``supabase_admin``.
- supautils intercepts the statement before any event trigger fires; the model
  is an event trigger, so an event trigger whose name sorts before
  ``supautils_drop_trigger_grants`` would run before the locks are taken.
- The model learns the target table by parsing ``current_query()`` (comments
  stripped; the n-th ``DROP TRIGGER [IF EXISTS] name ON table`` of the query
  string for the n-th DROP TRIGGER it runs). Dynamic SQL whose text does not
  name the table literally, or a query string that mentions more DROP TRIGGER
  statements than it runs (e.g. inside a function body), may pick the wrong
  target; with no target found it locks the whole list and grants nothing.
- The "current role" supautils checks is ``GetUserId()``; the model uses the
  ``role`` setting (SET ROLE) or else the session user, so a DROP TRIGGER inside
  a SECURITY DEFINER function counts as its caller's, not as its owner's.
- Only ``drop_trigger_grants`` is modelled: not ``policy_grants`` (CREATE/ALTER/
  DROP POLICY on auth tables), privileged extensions, reserved roles or
  reserved memberships. The newer 24-entry list is not used.
"""

from __future__ import annotations

import json

import psycopg2

ROLE_SETUPS = ("membership", "current", "hosted")
DEFAULT_ROLE_SETUP = "hosted"

# supabase/postgres ansible/files/postgresql_config/supautils.conf.j2 (the 11-entry list,
# identical to policy_grants there); auth.users is the fifth entry.
DROP_TRIGGER_GRANTS: dict[str, list[str]] = {
    "postgres": [
        "auth.audit_log_entries",
        "auth.identities",
        "auth.refresh_tokens",
        "auth.sessions",
        "auth.users",
        "realtime.messages",
        "storage.buckets",
        "storage.migrations",
        "storage.objects",
        "storage.s3_multipart_uploads",
        "storage.s3_multipart_uploads_parts",
    ]
}
DROP_TRIGGER_GRANTS_JSON = json.dumps(DROP_TRIGGER_GRANTS, separators=(",", ":"))

# The auth tables this fixture creates, each owned by supabase_auth_admin with RLS on.
AUTH_TABLES = (
    "users",
    "identities",
    "sessions",
    "refresh_tokens",
    "audit_log_entries",
    "one_time_tokens",
    "mfa_amr_claims",
    "instances",
    "schema_migrations",
)


def _check_setup(roles: str) -> str:
    if roles not in ROLE_SETUPS:
        raise ValueError(f"unknown role setup {roles!r}: expected one of {', '.join(ROLE_SETUPS)}")
    return roles


# -- roles (once per server) ------------------------------------------------------------------

_ROLES_SQL = """
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postgres') THEN
    CREATE ROLE postgres;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supabase_auth_admin') THEN
    CREATE ROLE supabase_auth_admin;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
    CREATE ROLE authenticator;
  END IF;
END
$roles$;
-- 10000000000000_demote-postgres.sql
ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS INHERIT;
-- 00000000000001-auth-schema.sql (CREATEROLE until 20260821154147_revoke_createrole_from_auth_admin)
ALTER ROLE supabase_auth_admin NOSUPERUSER NOINHERIT {auth_admin_createrole} LOGIN NOREPLICATION NOBYPASSRLS;
-- 00000000000000-initial-schema.sql, then 20230529180330_alter_api_roles_for_inherit.sql
ALTER ROLE anon NOSUPERUSER NOLOGIN INHERIT NOCREATEROLE NOCREATEDB NOBYPASSRLS;
ALTER ROLE authenticated NOSUPERUSER NOLOGIN INHERIT NOCREATEROLE NOCREATEDB NOBYPASSRLS;
ALTER ROLE service_role NOSUPERUSER NOLOGIN INHERIT NOCREATEROLE NOCREATEDB BYPASSRLS;
ALTER ROLE authenticator NOSUPERUSER LOGIN NOINHERIT NOCREATEROLE NOCREATEDB NOBYPASSRLS;
GRANT anon, authenticated, service_role TO authenticator;

ALTER ROLE postgres SET search_path TO "$user", public, extensions;
ALTER ROLE supabase_auth_admin SET search_path = auth;
-- 20220322085208_gotrue-session-limit.sql
ALTER ROLE supabase_auth_admin SET idle_in_transaction_session_timeout TO 60000;
ALTER ROLE anon SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';
ALTER ROLE authenticator SET statement_timeout = '8s';
ALTER ROLE authenticator SET lock_timeout = '8s';

-- 20230201083204, 20240606060239
GRANT anon, authenticated, service_role TO postgres;
GRANT pg_read_all_data, pg_signal_backend TO postgres;
"""

# 20220609081115_grant-supabase-auth-admin-and-supabase-storage-admin-to-postgres.sql
_MEMBERSHIP_ROLES_SQL = """
GRANT supabase_auth_admin TO postgres;
"""

# 20250421084701_revoke_admin_roles_from_postgres.sql, 20250605172253 (PostgreSQL 16+)
_CURRENT_ROLES_SQL = """
DO $current$
BEGIN
  IF pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER') THEN
    REVOKE supabase_auth_admin FROM postgres;
  END IF;
  IF current_setting('server_version_num')::int >= 160000 THEN
    GRANT anon, authenticated, service_role TO postgres WITH ADMIN OPTION;
  END IF;
END
$current$;
"""

# supabase/postgres conf.d/supautils.conf: `supautils.drop_trigger_grants = '{...}'`. PostgreSQL 15's
# ALTER SYSTEM only accepts a placeholder the session already knows, hence the SETs first.
_HOSTED_SYSTEM_SQL = tuple(
    statement.replace("{grants}", DROP_TRIGGER_GRANTS_JSON.replace("'", "''"))
    for statement in (
        "SET supautils.drop_trigger_grants = '{grants}'",
        "SET supautils.superuser = 'supabase_admin'",
        "ALTER SYSTEM SET supautils.drop_trigger_grants = '{grants}'",
        "ALTER SYSTEM SET supautils.superuser = 'supabase_admin'",
        "SELECT pg_reload_conf()",
    )
)


def cluster_sql(roles: str = DEFAULT_ROLE_SETUP) -> str:
    """The roles of one role setup (idempotent; run once per server as the superuser)."""
    _check_setup(roles)
    sql = _ROLES_SQL.replace(
        "{auth_admin_createrole}", "CREATEROLE" if roles == "membership" else "NOCREATEROLE"
    )
    return sql + (_MEMBERSHIP_ROLES_SQL if roles == "membership" else _CURRENT_ROLES_SQL)


# -- one database -----------------------------------------------------------------------------

# Database privileges are not copied from a template: run this in every clone too.
DATABASE_GRANTS_SQL = """
DO $grants$
BEGIN
  EXECUTE format('GRANT CONNECT, CREATE, TEMPORARY ON DATABASE %I TO postgres', current_database());
  -- 20251121141100_supabase_auth_admin_db_grants.sql
  EXECUTE format('GRANT CREATE ON DATABASE %I TO supabase_auth_admin', current_database());
END
$grants$;
"""

_SCHEMAS_SQL = """
CREATE SCHEMA IF NOT EXISTS extensions;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
GRANT ALL ON SCHEMA extensions TO postgres;

GRANT ALL ON SCHEMA public TO postgres;
GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
  GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
  GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
  GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;

-- 00000000000001-auth-schema.sql
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT ALL PRIVILEGES ON SCHEMA auth TO supabase_auth_admin;
-- 20211115181400_update-auth-permissions.sql
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth GRANT ALL ON TABLES TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth GRANT ALL ON SEQUENCES TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth GRANT ALL ON ROUTINES TO postgres;
"""

# The auth service's own migrations (supabase/auth migrations/, bc32168e), as they leave each
# table, run as supabase_auth_admin the way the auth service runs them.
AUTH_SCHEMA_SQL = """
SET ROLE supabase_auth_admin;

DO $types$
BEGIN
  CREATE TYPE auth.aal_level AS ENUM ('aal1', 'aal2', 'aal3');
EXCEPTION WHEN duplicate_object THEN NULL;
END
$types$;
DO $types$
BEGIN
  CREATE TYPE auth.one_time_token_type AS ENUM (
    'confirmation_token', 'reauthentication_token', 'recovery_token',
    'email_change_token_new', 'email_change_token_current', 'phone_change_token'
  );
EXCEPTION WHEN duplicate_object THEN NULL;
END
$types$;

-- 00_init_auth_schema, 20210710035447, 20210722035447, 20210730183235, 20220114185340,
-- 20220323170000, 20221215195500, 20230116124310, 20230116124412, 20240214120130
CREATE TABLE IF NOT EXISTS auth.users (
  instance_id uuid NULL,
  id uuid NOT NULL,
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
  is_anonymous boolean NOT NULL DEFAULT false,
  CONSTRAINT users_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE auth.users IS 'Auth: Stores user login data within a secure schema.';
COMMENT ON COLUMN auth.users.is_sso_user IS
  'Auth: Set this column to true when the account comes from SSO. These accounts can have duplicate emails.';
CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users USING btree (instance_id);
CREATE INDEX IF NOT EXISTS users_instance_id_email_idx ON auth.users USING btree (instance_id, lower(email));
CREATE UNIQUE INDEX IF NOT EXISTS users_email_partial_key ON auth.users (email) WHERE (is_sso_user = false);
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users USING btree (is_anonymous);
-- 20220429102000_add_unique_idx
CREATE UNIQUE INDEX IF NOT EXISTS confirmation_token_idx ON auth.users USING btree (confirmation_token)
  WHERE confirmation_token !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS recovery_token_idx ON auth.users USING btree (recovery_token)
  WHERE recovery_token !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS email_change_token_current_idx ON auth.users USING btree (email_change_token_current)
  WHERE email_change_token_current !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS email_change_token_new_idx ON auth.users USING btree (email_change_token_new)
  WHERE email_change_token_new !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS reauthentication_token_idx ON auth.users USING btree (reauthentication_token)
  WHERE reauthentication_token !~ '^[0-9 ]*$';

-- 20210909172000, 20211122151130, 20221215195800, 20231117164230
CREATE TABLE IF NOT EXISTS auth.identities (
  provider_id text NOT NULL,
  user_id uuid NOT NULL,
  identity_data jsonb NOT NULL,
  provider text NOT NULL,
  last_sign_in_at timestamptz NULL,
  created_at timestamptz NULL,
  updated_at timestamptz NULL,
  email text GENERATED ALWAYS AS (lower(identity_data ->> 'email')) STORED,
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  CONSTRAINT identities_pkey PRIMARY KEY (id),
  CONSTRAINT identities_provider_id_provider_unique UNIQUE (provider_id, provider),
  CONSTRAINT identities_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE
);
COMMENT ON TABLE auth.identities IS 'Auth: Stores identities associated to a user.';
CREATE INDEX IF NOT EXISTS identities_user_id_idx ON auth.identities USING btree (user_id);
CREATE INDEX IF NOT EXISTS identities_email_idx ON auth.identities (email text_pattern_ops);

-- 20220811173540, 20221003041400, 20221020193600, 20221114143122, 20231027141322, 20231114161723,
-- 20250904133000 (oauth_client_id; its foreign key to auth.oauth_clients is left out),
-- 20251007112900, 20251111201300
CREATE TABLE IF NOT EXISTS auth.sessions (
  id uuid NOT NULL,
  user_id uuid NOT NULL,
  created_at timestamptz NULL,
  updated_at timestamptz NULL,
  factor_id uuid NULL,
  aal auth.aal_level NULL,
  not_after timestamptz NULL,
  refreshed_at timestamp without time zone NULL,
  user_agent text NULL,
  ip inet NULL,
  tag text NULL,
  oauth_client_id uuid NULL,
  refresh_token_hmac_key text NULL,
  refresh_token_counter bigint NULL,
  scopes text NULL,
  CONSTRAINT sessions_pkey PRIMARY KEY (id),
  CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE,
  CONSTRAINT sessions_scopes_length CHECK (char_length(scopes) <= 4096)
);
COMMENT ON TABLE auth.sessions IS 'Auth: Stores session data associated to a user.';
CREATE INDEX IF NOT EXISTS sessions_user_id_idx ON auth.sessions (user_id);
CREATE INDEX IF NOT EXISTS user_id_created_at_idx ON auth.sessions (user_id, created_at);
CREATE INDEX IF NOT EXISTS sessions_not_after_idx ON auth.sessions (not_after DESC);
CREATE INDEX IF NOT EXISTS sessions_oauth_client_id_idx ON auth.sessions (oauth_client_id);

-- 00_init_auth_schema, 20210927181326, 20220811173540, 20221021073300, 20221114143410 (no parent
-- foreign key), 20230411005111, 20230508135423. user_id is varchar and has no foreign key.
CREATE TABLE IF NOT EXISTS auth.refresh_tokens (
  instance_id uuid NULL,
  id bigserial NOT NULL,
  "token" varchar(255) NULL,
  user_id varchar(255) NULL,
  revoked bool NULL,
  created_at timestamptz NULL,
  updated_at timestamptz NULL,
  parent varchar(255) NULL,
  session_id uuid NULL,
  CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id),
  CONSTRAINT refresh_tokens_token_unique UNIQUE ("token"),
  CONSTRAINT refresh_tokens_session_id_fkey FOREIGN KEY (session_id) REFERENCES auth.sessions (id) ON DELETE CASCADE
);
COMMENT ON TABLE auth.refresh_tokens IS 'Auth: Store of tokens used to refresh JWT tokens once they expire.';
CREATE INDEX IF NOT EXISTS refresh_tokens_instance_id_idx ON auth.refresh_tokens USING btree (instance_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_instance_id_user_id_idx
  ON auth.refresh_tokens USING btree (instance_id, user_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_parent_idx ON auth.refresh_tokens USING btree (parent);
CREATE INDEX IF NOT EXISTS refresh_tokens_session_id_revoked_idx ON auth.refresh_tokens (session_id, revoked);
CREATE INDEX IF NOT EXISTS refresh_tokens_updated_at_idx ON auth.refresh_tokens (updated_at DESC);

-- 00_init_auth_schema, 20220614074223
CREATE TABLE IF NOT EXISTS auth.audit_log_entries (
  instance_id uuid NULL,
  id uuid NOT NULL,
  payload json NULL,
  created_at timestamptz NULL,
  ip_address varchar(64) NOT NULL DEFAULT '',
  CONSTRAINT audit_log_entries_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE auth.audit_log_entries IS 'Auth: Audit trail for user actions.';
CREATE INDEX IF NOT EXISTS audit_logs_instance_id_idx ON auth.audit_log_entries USING btree (instance_id);

-- 20240427152123_add_one_time_tokens_table
CREATE TABLE IF NOT EXISTS auth.one_time_tokens (
  id uuid PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users ON DELETE CASCADE,
  token_type auth.one_time_token_type NOT NULL,
  token_hash text NOT NULL,
  relates_to text NOT NULL,
  created_at timestamp without time zone NOT NULL DEFAULT now(),
  updated_at timestamp without time zone NOT NULL DEFAULT now(),
  CHECK (char_length(token_hash) > 0)
);
CREATE INDEX IF NOT EXISTS one_time_tokens_token_hash_hash_idx ON auth.one_time_tokens USING hash (token_hash);
CREATE INDEX IF NOT EXISTS one_time_tokens_relates_to_hash_idx ON auth.one_time_tokens USING hash (relates_to);
CREATE UNIQUE INDEX IF NOT EXISTS one_time_tokens_user_id_token_type_key ON auth.one_time_tokens (user_id, token_type);

-- 20221003041349_add_mfa_schema, 20221011041400_add_mfa_indexes
CREATE TABLE IF NOT EXISTS auth.mfa_amr_claims (
  session_id uuid NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  authentication_method text NOT NULL,
  id uuid NOT NULL,
  CONSTRAINT mfa_amr_claims_session_id_authentication_method_pkey UNIQUE (session_id, authentication_method),
  CONSTRAINT mfa_amr_claims_session_id_fkey FOREIGN KEY (session_id) REFERENCES auth.sessions (id) ON DELETE CASCADE,
  CONSTRAINT amr_id_pk PRIMARY KEY (id)
);
COMMENT ON TABLE auth.mfa_amr_claims IS
  'auth: stores authenticator method reference claims for multi factor authentication';

-- 00_init_auth_schema
CREATE TABLE IF NOT EXISTS auth.instances (
  id uuid NOT NULL,
  uuid uuid NULL,
  raw_base_config text NULL,
  created_at timestamptz NULL,
  updated_at timestamptz NULL,
  CONSTRAINT instances_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE auth.instances IS 'Auth: Manages users across multiple sites.';
CREATE TABLE IF NOT EXISTS auth.schema_migrations (
  "version" varchar(255) NOT NULL,
  CONSTRAINT schema_migrations_pkey PRIMARY KEY ("version")
);
COMMENT ON TABLE auth.schema_migrations IS 'Auth: Manages updates to the auth system.';

-- 20220224000811_update_auth_functions, 20220531120530_add_auth_jwt_function
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
CREATE OR REPLACE FUNCTION auth.email() RETURNS text LANGUAGE sql STABLE AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  select
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

-- 20240612123726_enable_rls_update_grants
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.audit_log_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.one_time_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.mfa_amr_claims ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.schema_migrations ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON auth.users, auth.identities, auth.sessions, auth.refresh_tokens, auth.audit_log_entries,
  auth.one_time_tokens, auth.mfa_amr_claims, auth.instances, auth.schema_migrations
  TO postgres WITH GRANT OPTION;

RESET ROLE;

-- 10000000000000_demote-postgres.sql, 20211115181400_update-auth-permissions.sql
GRANT ALL ON ALL TABLES IN SCHEMA auth TO postgres;
GRANT ALL ON ALL SEQUENCES IN SCHEMA auth TO postgres;
GRANT ALL ON ALL ROUTINES IN SCHEMA auth TO postgres;
"""

# Older projects: GRANT ALL ON SCHEMA auth TO postgres (demote-postgres), CREATE included.
_MEMBERSHIP_DATABASE_SQL = """
GRANT USAGE, CREATE ON SCHEMA auth TO postgres;
"""

# 20250421084701_revoke_admin_roles_from_postgres.sql
_CURRENT_DATABASE_SQL = """
GRANT USAGE ON SCHEMA auth TO postgres;
REVOKE CREATE ON SCHEMA auth FROM postgres;
REVOKE ALL ON auth.schema_migrations FROM postgres;
"""

# The model of supautils' drop_trigger_grants (see the module docstring). Runs as supabase_admin.
# The event-trigger functions are SECURITY DEFINER (an event-trigger function cannot be called
# directly) and deliberately have no SET search_path: the target of an unqualified
# DROP TRIGGER resolves with the caller's search_path, as RangeVarGetRelid does; every name in
# them is schema-qualified.
SUPAUTILS_MODEL_SQL = r"""
CREATE OR REPLACE FUNCTION extensions.supautils_drop_trigger_grants_start()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $model$
DECLARE
  acting name := CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                      ELSE pg_catalog.current_setting('role')::name END;
  grants jsonb;
  listed jsonb;
  query text;
  targets text[];
  marker text;
  nth int;
  target_name text;
  target regclass;
  entry text;
  rel regclass;
  owner_role name;
  matched boolean := false;
BEGIN
  IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = acting) THEN
    RETURN;  -- supautils: `if (superuser()) break;`
  END IF;

  -- the table of the n-th DROP TRIGGER of this query string
  query := pg_catalog.regexp_replace(pg_catalog.current_query(), '/\*.*?\*/', ' ', 'g');
  query := pg_catalog.regexp_replace(query, '--[^\n]*', ' ', 'g');
  SELECT pg_catalog.array_agg(m.found[1] ORDER BY m.ord) INTO targets
  FROM pg_catalog.regexp_matches(
    query,
    'drop\s+trigger\s+(?:if\s+exists\s+)?(?:"(?:[^"]|"")+"|[^\s;"]+)\s+on\s+'
    '((?:"(?:[^"]|"")+"|[[:alpha:]_][[:alnum:]_$]*)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[[:alpha:]_][[:alnum:]_$]*))?)',
    'gi') WITH ORDINALITY AS m(found, ord);
  marker := pg_catalog.current_setting('supautils_model.position', true);
  nth := CASE WHEN pg_catalog.split_part(marker, '|', 1) = pg_catalog.statement_timestamp()::text
              THEN pg_catalog.split_part(marker, '|', 2)::int + 1 ELSE 1 END;
  PERFORM pg_catalog.set_config('supautils_model.position',
                                pg_catalog.statement_timestamp()::text || '|' || nth, true);
  IF targets IS NOT NULL THEN
    target_name := targets[LEAST(nth, pg_catalog.cardinality(targets))];
    target := pg_catalog.to_regclass(pg_catalog.array_to_string(
      ARRAY(SELECT pg_catalog.quote_ident(part) FROM pg_catalog.unnest(pg_catalog.parse_ident(target_name))
            WITH ORDINALITY AS p(part, ord) ORDER BY p.ord), '.'));
    IF target IS NULL THEN
      -- RangeVarGetRelid(target, AccessExclusiveLock, missing_ok=false)
      RAISE EXCEPTION 'relation "%" does not exist',
        pg_catalog.array_to_string(pg_catalog.parse_ident(target_name), '.')
        USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', target);
  END IF;

  grants := NULLIF(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb;
  listed := grants -> acting::text;
  IF listed IS NULL THEN
    RETURN;
  END IF;
  FOR entry IN SELECT e.value FROM pg_catalog.jsonb_array_elements_text(listed) WITH ORDINALITY AS e(value, ord)
               ORDER BY e.ord LOOP
    rel := pg_catalog.to_regclass(entry);
    CONTINUE WHEN rel IS NULL;  -- missing_ok=true for the listed tables
    EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', rel);
    IF rel OPERATOR(pg_catalog.=) target THEN
      matched := true;
      EXIT;
    END IF;
  END LOOP;
  IF NOT matched THEN
    RETURN;  -- PostgreSQL's ownership check decides
  END IF;

  SELECT c.relowner::regrole::name INTO owner_role FROM pg_catalog.pg_class c WHERE c.oid = target;
  IF pg_catalog.pg_has_role(acting, owner_role, 'USAGE')
     OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = owner_role) THEN
    RETURN;
  END IF;
  -- supautils runs the drop as its superuser; the model lends the owner's role for this statement
  EXECUTE pg_catalog.format('GRANT %I TO %I', owner_role, acting);
  PERFORM pg_catalog.set_config('supautils_model.lent',
                                pg_catalog.format('%I %I', owner_role, acting), true);
END
$model$;

CREATE OR REPLACE FUNCTION extensions.supautils_drop_trigger_grants_end()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $model$
DECLARE
  lent text := pg_catalog.current_setting('supautils_model.lent', true);
BEGIN
  IF COALESCE(lent, '') = '' THEN
    RETURN;
  END IF;
  EXECUTE pg_catalog.format('REVOKE %s FROM %s', pg_catalog.split_part(lent, ' ', 1),
                            pg_catalog.split_part(lent, ' ', 2));
  PERFORM pg_catalog.set_config('supautils_model.lent', '', true);
END
$model$;

REVOKE ALL ON FUNCTION extensions.supautils_drop_trigger_grants_start() FROM PUBLIC;
REVOKE ALL ON FUNCTION extensions.supautils_drop_trigger_grants_end() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS supautils_drop_trigger_grants;
CREATE EVENT TRIGGER supautils_drop_trigger_grants ON ddl_command_start
  WHEN TAG IN ('DROP TRIGGER')
  EXECUTE FUNCTION extensions.supautils_drop_trigger_grants_start();
DROP EVENT TRIGGER IF EXISTS supautils_drop_trigger_grants_end;
CREATE EVENT TRIGGER supautils_drop_trigger_grants_end ON ddl_command_end
  WHEN TAG IN ('DROP TRIGGER')
  EXECUTE FUNCTION extensions.supautils_drop_trigger_grants_end();
"""


def database_sql(roles: str = DEFAULT_ROLE_SETUP) -> str:
    """Schemas, auth tables and grants of one database in a role setup (run as the superuser)."""
    _check_setup(roles)
    sql = DATABASE_GRANTS_SQL + _SCHEMAS_SQL + AUTH_SCHEMA_SQL
    if roles == "membership":
        return sql + _MEMBERSHIP_DATABASE_SQL
    sql += _CURRENT_DATABASE_SQL
    if roles == "hosted":
        sql += SUPAUTILS_MODEL_SQL
    return sql


CLUSTER_SQL = cluster_sql(DEFAULT_ROLE_SETUP)
DATABASE_SQL = database_sql(DEFAULT_ROLE_SETUP)


# -- what apps already have -------------------------------------------------------------------

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

# Verbatim from Supabase's guide "User Management" (id 'user-management'),
# https://supabase.com/docs/guides/auth/managing-user-data, source
# supabase/supabase apps/docs/content/guides/auth/managing-user-data.mdx: the profiles table
# and the trigger that fills it, the very names (handle_new_user, on_auth_user_created) that
# ghostsync's own trigger uses. Install as ``postgres``.
MANAGING_USER_DATA_SQL = """
create table public.profiles (
  id uuid not null references auth.users on delete cascade,
  first_name text,
  last_name text,

  primary key (id)
);

alter table public.profiles enable row level security;

-- inserts a row into public.profiles
create function public.handle_new_user()
returns trigger
language plpgsql
security definer set search_path = ''
as $$
begin
  insert into public.profiles (id, first_name, last_name)
  values (new.id, new.raw_user_meta_data ->> 'first_name', new.raw_user_meta_data ->> 'last_name');
  return new;
end;
$$;

-- trigger the function every time a user is created
create trigger on_auth_user_created
  after insert on auth.users
  for each row execute procedure public.handle_new_user();
"""
"""Supabase's documented "managing user data" pattern, verbatim (see the comment above).

``public.profiles`` (RLS on, no policy in the guide), ``public.handle_new_user()``
(SECURITY DEFINER, ``search_path = ''``) and ``on_auth_user_created`` AFTER INSERT ON
``auth.users``. Run it as ``postgres``: on "current"/"hosted" servers CREATE TRIGGER
works through the TRIGGER privilege; DROP TRIGGER needs supautils ("hosted") or
membership ("membership").
"""

# The policies of Supabase's "User Management Starter" (supabase/supabase
# examples/user-management/*/supabase/migrations, the dashboard's SQL quickstart), in the
# `(select auth.uid())` form its current copies use, for public.profiles above. The guide
# itself enables RLS without a policy.
MANAGING_USER_DATA_POLICIES_SQL = """
create policy "Public profiles are viewable by everyone." on public.profiles
  for select using (true);

create policy "Users can insert their own profile." on public.profiles
  for insert with check ((select auth.uid()) = id);

create policy "Users can update own profile." on public.profiles
  for update using ((select auth.uid()) = id);
"""
"""RLS policies for ``MANAGING_USER_DATA_SQL``'s ``public.profiles`` (Supabase's User Management Starter)."""

# An app's own trigger on its profile table: lower-cases and trims the email before every
# INSERT or UPDATE OF email, as apps do to keep a case-insensitive UNIQUE. Needs APP_PROFILES_SQL.
APP_PROFILE_TRIGGER_SQL = """
CREATE FUNCTION public.normalize_profile_email() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  NEW.email := lower(btrim(NEW.email));
  RETURN NEW;
END
$$;
CREATE TRIGGER normalize_profile_email
  BEFORE INSERT OR UPDATE OF email ON public.users
  FOR EACH ROW EXECUTE FUNCTION public.normalize_profile_email();
"""
"""An app-owned BEFORE INSERT OR UPDATE OF email trigger on ``public.users`` that normalises the email."""

APP_PROFILES_WITHOUT_FK_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY,
  email text,
  email_verified boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""
"""An app's ``public.users`` with no foreign key to auth.users: nothing but ghostsync removes a deleted
account's profile (and nothing stops a profile from outliving its account). RLS on, no policy: private
(with RLS off, Supabase's default grants would let anon read every row, and ghostsync would add no column)."""

APP_PROFILES_FK_WITHOUT_CASCADE_SQL = APP_PROFILES_WITHOUT_FK_SQL.replace(
    "id uuid PRIMARY KEY", "id uuid PRIMARY KEY REFERENCES auth.users (id)"
)
"""The same with a foreign key that does not cascade: the key refuses a delete while the profile exists."""

APP_UNIQUE_EMAIL_DEFERRED_SQL = """
ALTER TABLE public.users ADD CONSTRAINT users_email_key UNIQUE (email) DEFERRABLE INITIALLY DEFERRED;
"""
"""``UNIQUE (email) DEFERRABLE INITIALLY DEFERRED`` on ``public.users``: a duplicate fails at COMMIT,
not at the INSERT (so an exception block around the INSERT does not catch it)."""

APP_EMAIL_NOT_NULL_SQL = """
ALTER TABLE public.users ALTER COLUMN email SET NOT NULL;
"""
"""``public.users.email NOT NULL``: phone and anonymous users (email NULL in auth.users) cannot get a profile."""

APP_CHECKS_SQL = """
ALTER TABLE public.users ADD CONSTRAINT users_email_format CHECK (email IS NULL OR email LIKE '%_@_%');
ALTER TABLE public.users ADD CONSTRAINT users_email_length CHECK (char_length(email) <= 254);
"""
"""CHECK constraints apps put on ``public.users.email``: a format check (a soft-deleted user's
43-character hash has no ``@`` and fails it) and a length check."""

APP_DEFERRABLE_PRIMARY_KEY_SQL = """
CREATE TABLE public.users (
  id uuid NOT NULL,
  email text,
  email_verified boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT users_pkey PRIMARY KEY (id) DEFERRABLE INITIALLY IMMEDIATE,
  CONSTRAINT users_id_fkey FOREIGN KEY (id) REFERENCES auth.users (id) ON DELETE CASCADE
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""
"""A ``public.users`` whose primary key is DEFERRABLE: ``INSERT ... ON CONFLICT (id)`` cannot use it
as an arbiter ("ON CONFLICT does not support deferrable unique constraints/exclusion constraints as
arbiters", 55000)."""

APP_PRIMARY_KEY_INCLUDE_SQL = """
CREATE TABLE public.users (
  id uuid NOT NULL,
  email text,
  email_verified boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT users_pkey PRIMARY KEY (id) INCLUDE (email),
  CONSTRAINT users_id_fkey FOREIGN KEY (id) REFERENCES auth.users (id) ON DELETE CASCADE
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
"""
"""A ``public.users`` whose primary key has INCLUDE columns (``PRIMARY KEY (id) INCLUDE (email)``):
``pg_index.indnatts`` (2) differs from ``indnkeyatts`` (1), which trips catalog checks that count
``indkey`` entries to tell a single-column key."""


# -- applying it ------------------------------------------------------------------------------


def make_cluster_supabase_like(superuser_dsn: str, roles: str = DEFAULT_ROLE_SETUP) -> None:
    """Create Supabase's roles of one role setup on the server behind ``superuser_dsn``."""
    _run(superuser_dsn, cluster_sql(roles))
    if roles == "hosted":
        _run(superuser_dsn, *_HOSTED_SYSTEM_SQL)


def make_database_supabase_like(superuser_dsn: str, roles: str = DEFAULT_ROLE_SETUP) -> None:
    """Create the schemas, the auth tables and Supabase's grants of one role setup in one database."""
    _run(superuser_dsn, database_sql(roles))


def grant_database_privileges(superuser_dsn: str) -> None:
    """Give ``postgres`` what Supabase gives it on its database (CREATE for its own schemas)."""
    _run(superuser_dsn, DATABASE_GRANTS_SQL)


def _run(dsn: str, *statements: str) -> None:
    """Run each of ``statements`` in autocommit, in order, on one connection."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


# -- apps with their own public.users (issue 18), written for this project ------------------------
# Each is installed as ``postgres`` on a database without ghostsync, before the upgrade; the auth
# service's writes (``ghostsync.testing.authservice``) then exercise the app's trigger beside ghostsync's.

APP_STARTER_SQL = """
CREATE TABLE public.users (
  id uuid REFERENCES auth.users ON DELETE CASCADE NOT NULL PRIMARY KEY,
  full_name text,
  avatar_url text,
  billing_address jsonb,
  payment_method jsonb
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Can view own user data." ON public.users FOR SELECT USING ((SELECT auth.uid()) = id);
CREATE POLICY "Can update own user data." ON public.users FOR UPDATE USING ((SELECT auth.uid()) = id);
CREATE FUNCTION public.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.users (id, full_name, avatar_url)
  VALUES (new.id, new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'avatar_url');
  RETURN new;
END;
$$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE PROCEDURE public.handle_new_user();
"""
"""The shape of the most-used Next.js subscription starter: ``public.users`` keyed by the auth id (cascading),
the app's columns only (full_name, avatar_url, billing_address, payment_method), RLS with "own data" policies,
and a plain INSERT of (id, full_name, avatar_url) from ``on_auth_user_created``. Private: nothing lets one
user read another's row."""

APP_CHAT_SQL = """
CREATE TYPE public.user_status AS ENUM ('ONLINE', 'OFFLINE');
CREATE TABLE public.users (
  id uuid REFERENCES auth.users NOT NULL PRIMARY KEY,
  username text,
  status public.user_status DEFAULT 'OFFLINE'
);
CREATE TABLE public.user_roles (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  user_id uuid REFERENCES public.users ON DELETE CASCADE NOT NULL,
  role text NOT NULL DEFAULT 'member'
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Allow logged-in read access" ON public.users FOR SELECT TO authenticated USING (true);
CREATE POLICY "Allow individual insert access" ON public.users FOR INSERT WITH CHECK ((SELECT auth.uid()) = id);
CREATE POLICY "Allow individual update access" ON public.users FOR UPDATE USING ((SELECT auth.uid()) = id);
CREATE FUNCTION public.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.users (id, username) VALUES (new.id, new.email);
  INSERT INTO public.user_roles (user_id) VALUES (new.id);
  RETURN new;
END;
$$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE PROCEDURE public.handle_new_user();
"""
"""The shape of Supabase's chat example: ``public.users`` (id references auth.users without cascade, username,
a status enum), a policy letting every signed-in user read every row (exposed: ghostsync adds no column here),
and a trigger that inserts plainly into public.users and a row into a second table that references it."""

APP_PRODUCTS_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  email text,
  full_name text,
  avatar_url text,
  team_id uuid,
  locale text NOT NULL DEFAULT 'en',
  onboarded boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users read their own row" ON public.users FOR SELECT TO authenticated
  USING (id = (SELECT auth.uid()));
CREATE FUNCTION public.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.users (id, email, full_name, avatar_url)
  VALUES (new.id, new.email, new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'avatar_url');
  RETURN new;
END;
$$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE PROCEDURE public.handle_new_user();
"""
"""A product's ``public.users`` (id, email, full_name, avatar_url, team_id, locale, ...; some synced columns,
not all) filled by a plain INSERT from the app's trigger; private (own-row policy)."""

APP_ON_CONFLICT_SQL = """
CREATE TABLE public.users (
  id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  display_name text,
  created_at timestamptz DEFAULT now()
);
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION public.create_profile_for_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.users (id, display_name)
  VALUES (new.id, coalesce(new.raw_user_meta_data ->> 'display_name', 'new user'))
  ON CONFLICT (id) DO NOTHING;
  RETURN new;
END;
$$;
CREATE TRIGGER zz_create_profile AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE PROCEDURE public.create_profile_for_new_user();
"""
"""A small app whose trigger inserts its profile with ``ON CONFLICT (id) DO NOTHING``, under a name that sorts
after ghostsync's (``zz_create_profile``): a profile ghostsync wrote first would swallow the app's display_name."""

APP_USERS_VIEW_SQL = """
CREATE VIEW public.users AS
  SELECT id, email, raw_user_meta_data ->> 'full_name' AS full_name, created_at FROM auth.users;
"""
"""An app whose ``public.users`` is a view over auth.users (ghostsync refuses it: it keeps a table)."""

APP_AUTH_ID_COLUMN_SQL = """
CREATE TABLE public.users (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  auth_user_id uuid UNIQUE REFERENCES auth.users (id) ON DELETE CASCADE,
  email text
);
"""
"""An app's ``public.users`` keyed by an integer identity, with the auth id in ``auth_user_id`` (refused)."""

APP_KEYED_ROWS_SQL = """
CREATE TABLE public.user_settings (
  user_id uuid PRIMARY KEY REFERENCES public.users (id) ON DELETE CASCADE,
  theme text NOT NULL
);
CREATE FUNCTION public.app_settings() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = '' AS $$
BEGIN INSERT INTO public.user_settings (user_id, theme) VALUES (new.id, 'dark'); RETURN new; END $$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.app_settings();
"""
"""An app trigger that writes only a row keyed to the profile (``public.user_settings``, its key to public.users
checked at once) and no profile: it needs the profile there before it runs. Needs a ``public.users``."""

DEFER_KEYED_ROWS_KEY_SQL = ("ALTER TABLE public.user_settings ALTER CONSTRAINT user_settings_user_id_fkey "
                            "DEFERRABLE INITIALLY DEFERRED")
"""``APP_KEYED_ROWS_SQL``'s key checked at COMMIT instead."""
