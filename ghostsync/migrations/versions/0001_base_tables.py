"""Base tables: public.users and public.cleanup_audit_log, created or adopted.

Revision ID: ghostsync_0001
Revises:
Create Date: 2026-11-24

Creates each table only when it does not exist. An existing table (the usual
case: the app already has its profiles) is adopted after checking that the
columns ghostsync writes are there with usable types and that no other
column would make ghostsync's inserts fail; otherwise the upgrade stops with a
message naming what is wrong. An existing table is never rewritten.

Downgrade keeps both tables and all their rows: no downgrade deletes a
profile or an audit row.
"""

from __future__ import annotations

from alembic import op

from ghostsync.migrations.kit import execute_guarded
from ghostsync.migrations.kit import raise_ghostsync_errors

revision = "ghostsync_0001"
down_revision = None
branch_labels = ("ghostsync",)
depends_on = None

CHECK_AUTH_SCHEMA = r"""
DO $ghostsync$
BEGIN
  IF to_regclass('auth.users') IS NULL THEN
    RAISE EXCEPTION 'ghostsync: auth.users does not exist or is not visible to role %; run against a Supabase database', current_user;
  END IF;
END
$ghostsync$;
"""

CREATE_OR_ADOPT_PROFILES = r"""
DO $ghostsync$
DECLARE
  problems text[] := '{}';
  need record;
  found_type text;
BEGIN
  IF to_regclass('public.users') IS NULL THEN
    CREATE TABLE public.users (
      id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
      email text,
      email_verified boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
    COMMENT ON TABLE public.users IS 'One profile per auth.users row, kept by ghostsync.';
    RETURN;
  END IF;

  FOR need IN
    SELECT * FROM (VALUES
      ('id', ARRAY['uuid']),
      ('email', ARRAY['text', 'character varying', 'citext']),
      ('email_verified', ARRAY['boolean']),
      ('created_at', ARRAY['timestamp with time zone', 'timestamp without time zone']),
      ('updated_at', ARRAY['timestamp with time zone', 'timestamp without time zone'])
    ) AS n(col, types)
  LOOP
    SELECT regexp_replace(format_type(a.atttypid, NULL), '^.*\.', '') INTO found_type
    FROM pg_attribute a
    WHERE a.attrelid = 'public.users'::regclass AND a.attname = need.col
      AND a.attnum > 0 AND NOT a.attisdropped;
    IF found_type IS NULL THEN
      problems := problems || format('column %s is missing (needs %s)', need.col, need.types[1]);
    ELSIF NOT found_type = ANY (need.types) THEN
      problems := problems || format('column %s is %s (needs %s)', need.col, found_type,
                                     array_to_string(need.types, ' or '));
    END IF;
  END LOOP;

  IF NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND i.indpred IS NULL
      AND i.indnatts = 1
      AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                         WHERE attrelid = 'public.users'::regclass AND attname = 'id' AND NOT attisdropped)
  ) THEN
    problems := problems || 'column id is neither the primary key nor unique'::text;
  END IF;

  problems := problems || ARRAY(
    SELECT format('column %s is NOT NULL without a default (ghostsync cannot fill it)', a.attname)
    FROM pg_attribute a
    WHERE a.attrelid = 'public.users'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
      AND a.attname NOT IN ('id', 'email', 'email_verified', 'created_at', 'updated_at')
    ORDER BY a.attnum
  );

  IF cardinality(problems) > 0 THEN
    RAISE EXCEPTION 'ghostsync: existing table public.users cannot be adopted: %',
      array_to_string(problems, '; ');
  END IF;
END
$ghostsync$;
"""

CREATE_OR_ADOPT_AUDIT_LOG = r"""
DO $ghostsync$
DECLARE
  problems text[] := '{}';
  need record;
  found_type text;
BEGIN
  IF to_regclass('public.cleanup_audit_log') IS NULL THEN
    CREATE TABLE public.cleanup_audit_log (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      job_name text NOT NULL,
      status text NOT NULL,
      records_affected bigint NOT NULL DEFAULT 0,
      started_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz,
      details jsonb NOT NULL DEFAULT '{}'::jsonb
    );
    COMMENT ON TABLE public.cleanup_audit_log IS 'One row per ghostsync job run.';
  ELSE
    FOR need IN
      SELECT * FROM (VALUES
        ('job_name', ARRAY['text', 'character varying']),
        ('status', ARRAY['text', 'character varying']),
        ('records_affected', ARRAY['bigint', 'integer', 'numeric']),
        ('started_at', ARRAY['timestamp with time zone', 'timestamp without time zone']),
        ('finished_at', ARRAY['timestamp with time zone', 'timestamp without time zone']),
        ('details', ARRAY['jsonb'])
      ) AS n(col, types)
    LOOP
      SELECT regexp_replace(format_type(a.atttypid, NULL), '^.*\.', '') INTO found_type
      FROM pg_attribute a
      WHERE a.attrelid = 'public.cleanup_audit_log'::regclass AND a.attname = need.col
        AND a.attnum > 0 AND NOT a.attisdropped;
      IF found_type IS NULL THEN
        problems := problems || format('column %s is missing (needs %s)', need.col, need.types[1]);
      ELSIF NOT found_type = ANY (need.types) THEN
        problems := problems || format('column %s is %s (needs %s)', need.col, found_type,
                                       array_to_string(need.types, ' or '));
      END IF;
    END LOOP;
    problems := problems || ARRAY(
      SELECT format('column %s is NOT NULL without a default (ghostsync cannot fill it)', a.attname)
      FROM pg_attribute a
      WHERE a.attrelid = 'public.cleanup_audit_log'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
        AND a.attname NOT IN ('job_name', 'status', 'records_affected', 'started_at', 'finished_at', 'details')
      ORDER BY a.attnum
    );
    IF cardinality(problems) > 0 THEN
      RAISE EXCEPTION 'ghostsync: existing table public.cleanup_audit_log cannot be adopted: %',
        array_to_string(problems, '; ');
    END IF;
  END IF;

  -- The audit log is operators' data: closed to the API roles of end users.
  ALTER TABLE public.cleanup_audit_log ENABLE ROW LEVEL SECURITY;
  REVOKE ALL ON TABLE public.cleanup_audit_log FROM PUBLIC;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON TABLE public.cleanup_audit_log FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON TABLE public.cleanup_audit_log FROM authenticated;
  END IF;

  -- Alembic's version table lands in public too, where Supabase's default
  -- privileges open it to end users.
  IF to_regclass('public.alembic_version') IS NOT NULL
     AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'public.alembic_version'::regclass), 'USAGE') THEN
    ALTER TABLE public.alembic_version ENABLE ROW LEVEL SECURITY;
    REVOKE ALL ON TABLE public.alembic_version FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
      REVOKE ALL ON TABLE public.alembic_version FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
      REVOKE ALL ON TABLE public.alembic_version FROM authenticated;
    END IF;
  END IF;
END
$ghostsync$;
"""


def upgrade() -> None:
    with raise_ghostsync_errors():
        op.execute(CHECK_AUTH_SCHEMA)
        # Creating public.users adds a foreign key to auth.users: a brief lock there.
        execute_guarded(CREATE_OR_ADOPT_PROFILES, "create or adopt public.users")
        execute_guarded(CREATE_OR_ADOPT_AUDIT_LOG, "create or adopt public.cleanup_audit_log")


def downgrade() -> None:
    # Both tables hold user data; rolling back never drops them.
    pass

