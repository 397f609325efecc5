SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '400ms', true);

DO $ghostsync_column$
DECLARE
  found_type text;
  found_length int;
  found_not_null boolean;
BEGIN
  SELECT pg_catalog.format_type(a.atttypid, NULL),
         CASE WHEN a.atttypid IN ('pg_catalog.varchar'::regtype, 'pg_catalog.bpchar'::regtype) AND a.atttypmod > 4
              THEN a.atttypmod - 4 END,
         a.attnotnull
    INTO found_type, found_length, found_not_null
  FROM pg_catalog.pg_attribute AS a
  WHERE a.attrelid = 'public.users'::regclass AND a.attname = 'deleted_at' AND a.attnum > 0 AND NOT a.attisdropped;
  IF found_type IS NULL THEN
    -- never a column of auth data on a table other users can read (ghostsync.migrations.exposure)
    IF coalesce((SELECT EXISTS (
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
      RETURN;
    END IF;
    ALTER TABLE public.users ADD COLUMN deleted_at timestamptz;
    INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('column', 'public.users.deleted_at', true, 'ghostsync_0005', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();
    RETURN;
  END IF;
  found_type := pg_catalog.regexp_replace(found_type, '^.*\.', '');
  IF NOT found_type = ANY (ARRAY['timestamp with time zone', 'timestamp without time zone']) THEN
    RAISE EXCEPTION 'ghostsync: existing column public.users.% is %, but the sync writes % into it: '
      'change its type to one of % or drop it; nothing was changed', 'deleted_at', found_type, 'timestamptz',
      pg_catalog.array_to_string(ARRAY['timestamp with time zone', 'timestamp without time zone'], ', ');
  END IF;
  IF found_length IS NOT NULL AND found_length < 0 THEN
    RAISE EXCEPTION 'ghostsync: existing column public.users.% is %(%), but the sync writes values up to % '
      'characters long into it: widen it (ALTER TABLE public.users ALTER COLUMN % TYPE %); nothing was changed',
      'deleted_at', found_type, found_length, '0', 'deleted_at', 'timestamptz';
  END IF;
  IF found_not_null AND true THEN
    RAISE EXCEPTION 'ghostsync: existing column public.users.% is NOT NULL, but the sync writes NULL into it '
      'for some users (%): drop the NOT NULL (ALTER TABLE public.users ALTER COLUMN % DROP NOT NULL); '
      'nothing was changed', 'deleted_at', 'accounts that are not soft-deleted', 'deleted_at';
  END IF;
  INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('column', 'public.users.deleted_at', false, 'ghostsync_0005', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();
END
$ghostsync_column$;

RELEASE SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

