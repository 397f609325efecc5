BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> ghostsync_0001

DO $ghostsync$
BEGIN
  IF to_regclass('auth.users') IS NULL THEN
    RAISE EXCEPTION 'ghostsync: auth.users does not exist or is not visible to role %; run against a Supabase database', current_user;
  END IF;
END
$ghostsync$;

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

DO $ghostsync$
DECLARE
  schema_created boolean := to_regnamespace('ghostsync') IS NULL;
BEGIN
  IF schema_created THEN
    CREATE SCHEMA ghostsync;
    COMMENT ON SCHEMA ghostsync IS 'ghostsync''s private objects; not for the Data API.';
  END IF;
  CREATE TABLE IF NOT EXISTS ghostsync.objects (
    kind text NOT NULL,
    name text NOT NULL,
    created boolean NOT NULL,
    revision text NOT NULL,
    owner text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
  );
  COMMENT ON TABLE ghostsync.objects IS
    'What ghostsync created (created) or adopted (not created); nothing else is ever replaced or dropped by it.';
  REVOKE ALL ON SCHEMA ghostsync FROM PUBLIC;
  REVOKE ALL ON TABLE ghostsync.objects FROM PUBLIC;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON SCHEMA ghostsync FROM anon;
    REVOKE ALL ON TABLE ghostsync.objects FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON SCHEMA ghostsync FROM authenticated;
    REVOKE ALL ON TABLE ghostsync.objects FROM authenticated;
  END IF;
  INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
  VALUES ('schema', 'ghostsync', schema_created, 'ghostsync_0001', current_user)
  ON CONFLICT (kind, name) DO NOTHING;
END
$ghostsync$;

DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '400ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '60000ms', true);
END
$ghostsync_step$;

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
    -- The audit log is operators' data: closed to the API roles of end users,
    -- its identity sequence too (USAGE or UPDATE on it would let anyone setval it).
    ALTER TABLE public.cleanup_audit_log ENABLE ROW LEVEL SECURITY;
    REVOKE ALL ON TABLE public.cleanup_audit_log FROM PUBLIC;
    REVOKE ALL ON SEQUENCE public.cleanup_audit_log_id_seq FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
      REVOKE ALL ON TABLE public.cleanup_audit_log FROM anon;
      REVOKE ALL ON SEQUENCE public.cleanup_audit_log_id_seq FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
      REVOKE ALL ON TABLE public.cleanup_audit_log FROM authenticated;
      REVOKE ALL ON SEQUENCE public.cleanup_audit_log_id_seq FROM authenticated;
    END IF;
    INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
    VALUES ('table', 'public.cleanup_audit_log', true, 'ghostsync_0001', current_user)
    ON CONFLICT (kind, name) DO NOTHING;
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
      RAISE EXCEPTION 'ghostsync: existing table public.cleanup_audit_log cannot be adopted: %; nothing was changed',
        array_to_string(problems, '; ');
    END IF;
    INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
    VALUES ('table', 'public.cleanup_audit_log', false, 'ghostsync_0001', current_user)
    ON CONFLICT (kind, name) DO NOTHING;
  END IF;

  -- Alembic's version table lands in public too, where Supabase's default
  -- privileges open it to end users. A host's env.py may keep it elsewhere
  -- (version_table_schema): to_regclass, not a ::regclass cast, which the planner
  -- would evaluate (and fail on) even where the table is missing.
  IF to_regclass('public.alembic_version') IS NOT NULL
     AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = to_regclass('public.alembic_version')), 'USAGE') THEN
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

DO $ghostsync_step$
DECLARE
  attempt int := 0;
BEGIN
  LOOP
    BEGIN
      PERFORM pg_catalog.set_config('lock_timeout',
        least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true);
      PERFORM pg_catalog.set_config('statement_timeout', '400ms', true);
      DO $ghostsync$
      DECLARE
        problems text[] := '{}';
        missing text[] := '{}';
        need record;
        found record;
        rel_kind "char";
        auth_column text;
        auth_column_how text;
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
          -- Supabase's default privileges open new tables to the API roles; RLS governs
          -- neither TRUNCATE, REFERENCES nor TRIGGER, and anon has no business with profiles.
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
            REVOKE ALL ON TABLE public.users FROM anon;
          END IF;
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
            REVOKE TRUNCATE, REFERENCES, TRIGGER ON TABLE public.users FROM authenticated;
          END IF;
          INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
          VALUES ('table', 'public.users', true, 'ghostsync_0001', current_user)
          ON CONFLICT (kind, name) DO NOTHING;
          RETURN;
        END IF;

        SELECT c.relkind INTO rel_kind FROM pg_class AS c WHERE c.oid = 'public.users'::regclass;
        IF rel_kind NOT IN ('r', 'p') THEN
          RAISE EXCEPTION 'ghostsync: public.users is a %, not a table, and ghostsync keeps its profiles in a table of '
            'that name: it neither replaces nor writes the app''s %; %nothing was changed',
            CASE rel_kind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                      ELSE format('relation of kind %s', rel_kind) END,
            CASE rel_kind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                      ELSE 'relation' END,
            CASE WHEN rel_kind IN ('v', 'm')
                 THEN 'a view over auth.users shows a row for every account, so it has no ghosts to prevent and '
                      'ghostsync is not needed beside it; '
                 ELSE '' END;
        END IF;

        FOR need IN
          SELECT * FROM (VALUES
            ('id', ARRAY['uuid'], false, 0, ''),
            ('email', ARRAY['text', 'character varying', 'citext'], true, 255, 'phone and anonymous users have no email'),
            ('email_verified', ARRAY['boolean'], false, 0, ''),
            ('created_at', ARRAY['timestamp with time zone', 'timestamp without time zone'], false, 0, ''),
            ('updated_at', ARRAY['timestamp with time zone', 'timestamp without time zone'], false, 0, '')
          ) AS n(col, types, nullable, length, why_null)
        LOOP
          SELECT regexp_replace(format_type(a.atttypid, NULL), '^.*\.', '') AS type_name,
                 CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod > 4
                      THEN a.atttypmod - 4 END AS length,
                 a.attnotnull AS not_null,
                 a.attidentity <> '' AS identity
            INTO found
          FROM pg_attribute a
          WHERE a.attrelid = 'public.users'::regclass AND a.attname = need.col
            AND a.attnum > 0 AND NOT a.attisdropped;
          IF need.col = 'id' AND (found.type_name IS NULL OR NOT found.type_name = ANY (need.types)) THEN
            -- The auth id kept in another column (an integer identity id beside auth_user_id uuid UNIQUE):
            -- named, never "change the type of id" (PostgreSQL refuses it for an identity column).
            -- The column found: a foreign key to auth.users, else a uuid column unique on its own.
            SELECT k.name, k.how INTO auth_column, auth_column_how
            FROM (SELECT a.attname AS name, 'a foreign key to auth.users' AS how, 0 AS rank, a.attnum
                  FROM pg_constraint AS c JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                  WHERE c.conrelid = 'public.users'::regclass AND c.contype = 'f' AND c.confrelid = 'auth.users'::regclass
                    AND cardinality(c.conkey) = 1
                  UNION ALL
                  SELECT a.attname, 'uuid, unique', 1, a.attnum
                  FROM pg_index AS i JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                  WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND i.indnkeyatts = 1
                    AND i.indexprs IS NULL AND i.indpred IS NULL AND a.atttypid = 'uuid'::regtype
                    AND a.attname <> 'id') AS k
            ORDER BY k.rank, k.attnum LIMIT 1;
            IF auth_column IS NOT NULL THEN
              problems := problems || format('column id is %s%s, and the auth id is in column %s (%s); '
                'ghostsync keeps profiles keyed by the auth id in column id and adopts no table keyed '
                'otherwise: keep the app''s own sync for this table', coalesce(found.type_name, 'missing'),
                CASE WHEN found.identity THEN ' (an identity column)' ELSE '' END, auth_column, auth_column_how);
            ELSIF found.type_name IS NULL THEN
              problems := problems || 'column id is missing: ghostsync keeps profiles keyed by the auth id (uuid) in column id'::text;
            ELSIF found.identity THEN
              -- PostgreSQL refuses to change an identity column's type: never advised.
              problems := problems || format('column id is %s (an identity column), not the auth id (uuid): ghostsync '
                'keeps profiles keyed by the auth id in column id and adopts no table keyed otherwise: keep the '
                'app''s own sync for this table', found.type_name);
            ELSE
              problems := problems || format('column id is %s (needs uuid)', found.type_name);
            END IF;
          ELSIF found.type_name IS NULL THEN
            missing := missing || need.col;
          ELSIF NOT found.type_name = ANY (need.types) THEN
            problems := problems || format('column %s is %s (needs %s)', need.col, found.type_name,
                                           array_to_string(need.types, ' or '));
          ELSIF found.length IS NOT NULL AND found.length < need.length THEN
            problems := problems || format('column %s is %s(%s), but auth.users holds values up to %s characters (widen it)',
                                           need.col, found.type_name, found.length, need.length);
          ELSIF found.not_null AND need.nullable THEN
            problems := problems || format('column %s is NOT NULL, but %s (drop the NOT NULL)', need.col, need.why_null);
          END IF;
        END LOOP;

        IF cardinality(problems) = 0 AND NOT EXISTS (
          SELECT 1 FROM pg_index i
          WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND i.indisvalid AND i.indimmediate
            AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 1
            AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                               WHERE attrelid = 'public.users'::regclass AND attname = 'id' AND NOT attisdropped)
        ) THEN
          IF EXISTS (
            SELECT 1 FROM pg_index i
            WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND NOT i.indimmediate AND i.indnkeyatts = 1
              AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                                 WHERE attrelid = 'public.users'::regclass AND attname = 'id' AND NOT attisdropped)
          ) THEN
            problems := problems || 'the key on column id is DEFERRABLE, and a deferrable key cannot serve ON CONFLICT (id) (make it NOT DEFERRABLE)'::text;
          ELSE
            problems := problems || 'column id is neither the primary key nor unique on its own'::text;
          END IF;
        END IF;

        IF cardinality(problems) > 0 THEN
          RAISE EXCEPTION 'ghostsync: existing table public.users cannot be adopted: %; nothing was changed',
            array_to_string(problems, '; ');
        END IF;
        INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
        VALUES ('table', 'public.users', false, 'ghostsync_0001', current_user)
        ON CONFLICT (kind, name) DO NOTHING;
        -- Never a column of auth data on a table other users can read: there ghostsync syncs what it has.
        IF cardinality(missing) > 0 AND NOT coalesce((SELECT EXISTS (
          SELECT 1 FROM (VALUES ('anon'), ('authenticated'), ('public')) AS r(name)
          WHERE (r.name = 'public' OR pg_catalog.to_regrole(r.name) IS NOT NULL)
            AND pg_catalog.has_any_column_privilege(r.name, c.oid, 'SELECT')
            AND (NOT c.relrowsecurity OR EXISTS (
              SELECT 1 FROM pg_catalog.pg_policy AS p
              WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
                AND (0::oid = ANY (p.polroles)
                     OR (r.name <> 'public' AND pg_catalog.to_regrole(r.name) = ANY (p.polroles)))
                AND p.polqual IS NOT NULL
                AND pg_catalog.pg_get_expr(p.polqual, p.polrelid)
                    !~ '(auth\.uid\(\)( AS uid\))? = |= (\( SELECT )?auth\.uid\(\))')))
        FROM pg_catalog.pg_class AS c
        WHERE c.oid = pg_catalog.to_regclass('public.users') AND c.relkind IN ('r', 'p')), false) THEN
          FOR i IN 1 .. cardinality(missing) LOOP
            EXECUTE format('ALTER TABLE public.users ADD COLUMN %I %s', missing[i],
                           CASE missing[i] WHEN 'email' THEN 'text' WHEN 'email_verified' THEN 'boolean'
                                           ELSE 'timestamptz' END);
            INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
            VALUES ('column', 'public.users.' || missing[i], true, 'ghostsync_0001', current_user)
            ON CONFLICT (kind, name) DO NOTHING;
          END LOOP;
        END IF;
      END
      $ghostsync$;
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > 20 THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within 400 ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', 'create or adopt public.users', attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least(2.0, 0.1 * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;

INSERT INTO alembic_version (version_num) VALUES ('ghostsync_0001') RETURNING alembic_version.version_num;

COMMIT;

