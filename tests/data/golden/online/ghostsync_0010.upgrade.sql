SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

DO $ghostsync_keyed$
DECLARE
  found record;
BEGIN
  SELECT t.tgname::text AS trigger, pg_catalog.format('%I.%I', n.nspname, r.relname) AS referencing, c.conname::text AS key
    INTO found
  FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_constraint AS c
    ON c.contype = 'f' AND c.confrelid = 'public.users'::pg_catalog.regclass AND c.conrelid <> c.confrelid
       AND NOT c.condeferred
  JOIN pg_catalog.pg_class AS r ON r.oid = c.conrelid
  JOIN pg_catalog.pg_namespace AS n ON n.oid = r.relnamespace
  WHERE t.tgrelid = 'auth.users'::pg_catalog.regclass AND NOT t.tgisinternal AND (t.tgtype & 4) <> 0
    AND t.tgenabled IN ('O', 'A')
    AND p.pronamespace <> 'ghostsync'::pg_catalog.regnamespace
    AND NOT EXISTS (SELECT 1 FROM ghostsync.objects AS o
                    WHERE o.kind = 'trigger' AND o.name = t.tgname || ' ON auth.users')
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS w JOIN pg_catalog.pg_proc AS wp ON wp.oid = w.tgfoid
                    WHERE w.tgrelid = t.tgrelid AND NOT w.tgisinternal AND (w.tgtype & 4) <> 0
                      AND w.tgenabled IN ('O', 'A') AND wp.pronamespace <> 'ghostsync'::pg_catalog.regnamespace
                      AND wp.prosrc ~* 'insert\s+into\s+("?public"?\s*\.\s*)?"?users"?\M')
    AND p.prosrc ~* ('insert\s+into\s+(only\s+)?("?' || pg_catalog.regexp_replace(n.nspname, '(\W)', '\\\1', 'g')
                     || '"?\s*\.\s*)?"?' || pg_catalog.regexp_replace(r.relname, '(\W)', '\\\1', 'g') || '"?\M')
  ORDER BY 1, 2, 3
  LIMIT 1;
  IF found.trigger IS NOT NULL THEN
    RAISE EXCEPTION 'ghostsync: app trigger % on auth.users inserts into %, whose key % to public.users is '
      'checked at once; from ghostsync_0010 on the profile is written at COMMIT, so every signup would fail '
      'there: make the key checked at COMMIT (ALTER TABLE % ALTER CONSTRAINT % DEFERRABLE INITIALLY DEFERRED), '
      'or let the trigger insert the profile first (INSERT INTO public.users (id) VALUES (new.id) ON CONFLICT '
      '(id) DO NOTHING), then upgrade again; nothing of this revision was applied',
      found.trigger, found.referencing, found.key, found.referencing, found.key;
  END IF;
END
$ghostsync_keyed$;

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure('ghostsync.write_profile(uuid,boolean)') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.write_profile(uuid,boolean)'
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', 'ghostsync.write_profile(uuid,boolean)';
  END IF;
END
$ghostsync_guard$;

CREATE OR REPLACE FUNCTION ghostsync.write_profile(account uuid, creating boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET TimeZone = 'UTC'
AS $function$
<<profile>>
DECLARE
  -- the synced columns, and the value each takes from the account (u), in the same order
  synced text[] := ARRAY['id', 'email', 'email_verified', 'deleted_at',
                         'created_at', 'updated_at'];
  sources text[] := ARRAY['u.id', 'u.email', 'u.email_confirmed_at IS NOT NULL', 'u.deleted_at',
                          'coalesce(u.created_at, pg_catalog.now())',
                          CASE WHEN creating THEN 'coalesce(u.updated_at, u.created_at, pg_catalog.now())'
                               ELSE 'pg_catalog.now()' END];
  target_columns text;
  source_values text;
  updates text;
  assignments text;
  written bigint := 0;
  deferrable_constraint record;
BEGIN
  -- The slow path of the sync functions, for a profile the app wrote first and for an
  -- adopted table without some synced column: writes the synced columns public.users
  -- has, from the account as it is now, and nothing else. The caller's exception block
  -- records what fails here.
  SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s.name), ', ' ORDER BY s.n),
         pg_catalog.string_agg(profile.sources[s.n], ', ' ORDER BY s.n),
         pg_catalog.string_agg(CASE WHEN s.name <> 'id' AND (creating OR s.name <> 'created_at')
                                    THEN pg_catalog.format('%I = EXCLUDED.%I', s.name, s.name) END,
                               ', ' ORDER BY s.n),
         pg_catalog.string_agg(CASE WHEN s.name <> 'id' AND (creating OR s.name <> 'created_at')
                                    THEN pg_catalog.format('%I = %s', s.name, profile.sources[s.n]) END,
                               ', ' ORDER BY s.n)
    INTO profile.target_columns, profile.source_values, profile.updates, profile.assignments
  FROM pg_catalog.unnest(profile.synced) WITH ORDINALITY AS s(name, n)
  WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                WHERE a.attrelid = 'public.users'::pg_catalog.regclass AND a.attname = s.name
                  AND a.attnum > 0 AND NOT a.attisdropped);
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite AS r
             WHERE r.ev_class = 'public.users'::pg_catalog.regclass AND r.ev_type IN ('2', '3')) THEN
    -- A rule on inserts or updates of public.users refuses ON CONFLICT (0A000): the profile
    -- there is updated, a missing one inserted plainly, through the app's rules.
    IF profile.assignments IS NOT NULL THEN
      EXECUTE pg_catalog.format(
        'UPDATE public.users AS p SET %s FROM auth.users AS u WHERE u.id = $1 AND p.id = u.id',
        profile.assignments)
      USING account;
    END IF;
    EXECUTE pg_catalog.format(
      'INSERT INTO public.users AS p (%s) SELECT %s FROM auth.users AS u WHERE u.id = $1 '
      'AND NOT EXISTS (SELECT 1 FROM public.users AS q WHERE q.id = u.id)',
      profile.target_columns, profile.source_values)
    USING account;
  ELSE
    EXECUTE pg_catalog.format(
      'INSERT INTO public.users AS p (%s) SELECT %s FROM auth.users AS u WHERE u.id = $1 ON CONFLICT (id) DO %s',
      profile.target_columns, profile.source_values, coalesce('UPDATE SET ' || profile.updates, 'NOTHING'))
    USING account;
  END IF;
  GET DIAGNOSTICS profile.written = ROW_COUNT;
  IF profile.written = 0 AND EXISTS (SELECT 1 FROM auth.users AS u WHERE u.id = account)
     AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = account) THEN
    -- An app's BEFORE INSERT trigger on public.users returned NULL, or an INSTEAD rule replaced the
    -- insert: no row and no error. Raised as the backfill records it (SQLSTATE 02000, no data, the
    -- app's triggers and rules named), so the caller's exception block records it and status
    -- counts the profile that cannot be created.
    RAISE EXCEPTION USING ERRCODE = '02000', MESSAGE = pg_catalog.format(
      'the insert wrote no row: %s on public.users skipped it',
      coalesce((SELECT pg_catalog.string_agg(pg_catalog.format('%s %s', s.kind, s.name), ', ' ORDER BY s.kind, s.name)
                FROM (SELECT 'BEFORE INSERT trigger' AS kind, t.tgname::text AS name
                      FROM pg_catalog.pg_trigger AS t
                      WHERE t.tgrelid = 'public.users'::pg_catalog.regclass AND NOT t.tgisinternal
                        AND t.tgenabled IN ('O', 'A') AND (t.tgtype & 7) = 7
                      UNION ALL
                      SELECT 'rule', r.rulename::text FROM pg_catalog.pg_rewrite AS r
                      WHERE r.ev_class = 'public.users'::pg_catalog.regclass AND r.ev_type = '3' AND r.is_instead
                     ) AS s), 'something of the app'));
  END IF;
  FOR deferrable_constraint IN
    SELECT c.conname FROM pg_catalog.pg_constraint AS c
    WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferrable
  LOOP
    EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferrable_constraint.conname);
  END LOOP;
END profile
$function$;

REVOKE ALL ON FUNCTION ghostsync.write_profile(uuid,boolean) FROM PUBLIC;

DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION ghostsync.write_profile(uuid,boolean) FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION ghostsync.write_profile(uuid,boolean) FROM authenticated;
  END IF;
END
$ghostsync_guard$;

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('function', 'ghostsync.write_profile(uuid,boolean)', true, 'ghostsync_0010', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure('ghostsync.handle_new_user()') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_new_user()'
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', 'ghostsync.handle_new_user()';
  END IF;
END
$ghostsync_guard$;

CREATE OR REPLACE FUNCTION ghostsync.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET TimeZone = 'UTC'
AS $function$
<<sync>>
DECLARE
  first_state text;
  failed_state text;
  failed_message text;
  inserted boolean;
  has_deferrable boolean;
  deferrable_constraint record;
BEGIN
  -- Fired at COMMIT (a deferred constraint trigger), after every immediate trigger: the
  -- app's own profile row, if its trigger writes one, is there by now. NEW is the row as
  -- inserted; the account may have been confirmed or deleted since, so it is read again.
  BEGIN
    -- The fast path: a plain INSERT of the full shape, no speculative insertion. Whether
    -- the profile table has a deferrable constraint is read with it, on every call (no
    -- cache: a constraint added in this transaction counts).
    INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
    SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, u.deleted_at,
           coalesce(u.created_at, pg_catalog.now()), coalesce(u.updated_at, u.created_at, pg_catalog.now())
    FROM auth.users AS u
    WHERE u.id = NEW.id
    RETURNING EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                      WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferrable)
    INTO sync.has_deferrable;
    -- no row and no error: the account is gone, or an app's BEFORE INSERT trigger on
    -- public.users returned NULL (the slow path tells them apart and records the latter)
    sync.inserted := FOUND;
    -- Such a constraint would be checked after this function, outside its exception
    -- block, and fail the COMMIT: it is checked here instead.
    IF has_deferrable THEN
      FOR deferrable_constraint IN
        SELECT c.conname FROM pg_catalog.pg_constraint AS c
        WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferrable
      LOOP
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferrable_constraint.conname);
      END LOOP;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS first_state = RETURNED_SQLSTATE, failed_state = RETURNED_SQLSTATE,
                            failed_message = MESSAGE_TEXT;
  END;
  -- unique_violation: the app's trigger wrote the profile first (or a backfill did);
  -- undefined_column: an adopted table without some synced column. Either way ghostsync
  -- writes the synced columns the table has, and only those. So do an insert that wrote
  -- no row and raised nothing (inserted is NULL where the insert raised: first_state tells)
  -- and feature_not_supported (an INSTEAD rule refuses RETURNING): write_profile raises
  -- 02000 where an app's trigger or rule skipped the profile.
  IF first_state IN ('23505', '42703', '0A000') OR (first_state IS NULL AND NOT sync.inserted) THEN
    BEGIN
      PERFORM ghostsync.write_profile(NEW.id, true);
      failed_state := NULL;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    END;
  END IF;
  IF failed_state IS NOT NULL THEN
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
  END IF;
  RETURN NEW;
END sync
$function$;

REVOKE ALL ON FUNCTION ghostsync.handle_new_user() FROM PUBLIC;

DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_new_user() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_new_user() FROM authenticated;
  END IF;
END
$ghostsync_guard$;

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('function', 'ghostsync.handle_new_user()', true, 'ghostsync_0010', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure('ghostsync.handle_user_updated()') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_user_updated()'
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', 'ghostsync.handle_user_updated()';
  END IF;
END
$ghostsync_guard$;

CREATE OR REPLACE FUNCTION ghostsync.handle_user_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET TimeZone = 'UTC'
AS $function$
<<sync>>
DECLARE
  first_state text;
  failed_state text;
  failed_message text;
  missing boolean;
  differs boolean;
  has_deferrable boolean;
  deferrable_constraint record;
BEGIN
  -- Fired at COMMIT, once per UPDATE that changed a synced value. The account is read
  -- again (a later UPDATE of the transaction, or a delete, may have followed) and only a
  -- profile that differs from it is written: in an autoconfirmed signup the insert sync,
  -- queued first, has written the confirmed profile already, and this one only reads.
  BEGIN
    SELECT p.id IS NULL,
           p.email IS DISTINCT FROM u.email
             OR (u.email_confirmed_at IS NOT NULL) IS DISTINCT FROM p.email_verified
             OR p.deleted_at IS DISTINCT FROM u.deleted_at
      INTO sync.missing, sync.differs
    FROM auth.users AS u LEFT JOIN public.users AS p ON p.id = u.id
    WHERE u.id = NEW.id;
    IF missing THEN
      -- No profile (a ghost), or one another transaction is writing right now (a backfill
      -- batch that read the account before this change): create it, waiting for that one
      -- and writing this account's newest values over it (write_profile checks the
      -- deferrable constraints itself).
      PERFORM ghostsync.write_profile(NEW.id, false);
    ELSIF differs THEN
      UPDATE public.users AS p
      SET email = u.email,
          email_verified = u.email_confirmed_at IS NOT NULL,
          deleted_at = u.deleted_at,
          updated_at = pg_catalog.now()
      FROM auth.users AS u
      WHERE u.id = NEW.id AND p.id = u.id
      RETURNING EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                        WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferrable)
      INTO sync.has_deferrable;
      -- Such a constraint would be checked after this function, outside its exception
      -- block, and fail the COMMIT: it is checked here instead.
      IF has_deferrable THEN
        FOR deferrable_constraint IN
          SELECT c.conname FROM pg_catalog.pg_constraint AS c
          WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferrable
        LOOP
          EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferrable_constraint.conname);
        END LOOP;
      END IF;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS first_state = RETURNED_SQLSTATE, failed_state = RETURNED_SQLSTATE,
                            failed_message = MESSAGE_TEXT;
  END;
  -- undefined_column: an adopted table without some synced column
  IF first_state = '42703' THEN
    BEGIN
      PERFORM ghostsync.write_profile(NEW.id, false);
      failed_state := NULL;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    END;
  END IF;
  IF failed_state IS NOT NULL THEN
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
  END IF;
  RETURN NULL;
END sync
$function$;

REVOKE ALL ON FUNCTION ghostsync.handle_user_updated() FROM PUBLIC;

DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_user_updated() FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION ghostsync.handle_user_updated() FROM authenticated;
  END IF;
END
$ghostsync_guard$;

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('function', 'ghostsync.handle_user_updated()', true, 'ghostsync_0010', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '400ms', true);

DO $ghostsync_guard$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_user_created' AND NOT tgisinternal
  ) AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_created' || ' ON ' || 'auth.users'
  ) THEN
    RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
      'ghostsync_on_auth_user_created', 'auth.users';
  END IF;
END
$ghostsync_guard$;

CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users FOR EACH ROW WHEN (false) EXECUTE FUNCTION ghostsync.handle_new_user();

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('trigger', 'ghostsync_on_auth_user_created' || ' ON ' || 'auth.users', true, 'ghostsync_0010', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_guard$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_user_updated' AND NOT tgisinternal
  ) AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users'
  ) THEN
    RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
      'ghostsync_on_auth_user_updated', 'auth.users';
  END IF;
END
$ghostsync_guard$;

CREATE OR REPLACE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, deleted_at ON auth.users FOR EACH ROW WHEN (false) EXECUTE FUNCTION ghostsync.handle_user_updated();

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('trigger', 'ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users', true, 'ghostsync_0010', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_guard$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = 'auth.users'::regclass AND tgname = 'zz_ghostsync_on_auth_user_created' AND NOT tgisinternal
  ) AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'zz_ghostsync_on_auth_user_created' || ' ON ' || 'auth.users'
  ) THEN
    RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
      'zz_ghostsync_on_auth_user_created', 'auth.users';
  END IF;
END
$ghostsync_guard$;

DO $ghostsync_replace$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
             WHERE tgrelid = 'auth.users'::pg_catalog.regclass AND tgname = 'zz_ghostsync_on_auth_user_created' AND NOT tgisinternal) THEN
    DROP TRIGGER "zz_ghostsync_on_auth_user_created" ON "auth"."users";
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE EXCEPTION 'ghostsync: cannot replace trigger % on % by its deferred form: role % is not the owner of % (%) '
    'and this database does not let it drop a trigger there; hosted Supabase allows it through supautils '
    '(supautils.drop_trigger_grants); here run the upgrade as the owner or a superuser (DATABASE_URL of '
    'supabase_admin); nothing of this revision was applied', 'zz_ghostsync_on_auth_user_created', 'auth.users', current_user,
    'auth.users', (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class AS c
                        WHERE c.oid = 'auth.users'::pg_catalog.regclass);
END
$ghostsync_replace$;

CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_created AFTER INSERT ON auth.users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_new_user();

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('trigger', 'zz_ghostsync_on_auth_user_created' || ' ON ' || 'auth.users', true, 'ghostsync_0010', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

DO $ghostsync_guard$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = 'auth.users'::regclass AND tgname = 'zz_ghostsync_on_auth_user_updated' AND NOT tgisinternal
  ) AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'zz_ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users'
  ) THEN
    RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
      'zz_ghostsync_on_auth_user_updated', 'auth.users';
  END IF;
END
$ghostsync_guard$;

DO $ghostsync_replace$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
             WHERE tgrelid = 'auth.users'::pg_catalog.regclass AND tgname = 'zz_ghostsync_on_auth_user_updated' AND NOT tgisinternal) THEN
    DROP TRIGGER "zz_ghostsync_on_auth_user_updated" ON "auth"."users";
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE EXCEPTION 'ghostsync: cannot replace trigger % on % by its deferred form: role % is not the owner of % (%) '
    'and this database does not let it drop a trigger there; hosted Supabase allows it through supautils '
    '(supautils.drop_trigger_grants); here run the upgrade as the owner or a superuser (DATABASE_URL of '
    'supabase_admin); nothing of this revision was applied', 'zz_ghostsync_on_auth_user_updated', 'auth.users', current_user,
    'auth.users', (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class AS c
                        WHERE c.oid = 'auth.users'::pg_catalog.regclass);
END
$ghostsync_replace$;

CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_updated AFTER UPDATE ON auth.users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM (new.email)::text) OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM (new.email_confirmed_at IS NULL)) OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION ghostsync.handle_user_updated();

INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ('trigger', 'zz_ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users', true, 'ghostsync_0010', current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();

RELEASE SAVEPOINT sa_savepoint_1;

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

SELECT pg_catalog.to_regclass('"alembic_version"') IS NOT NULL;

SELECT EXISTS (SELECT 1 FROM "alembic_version" WHERE xmin::text::bigint = pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296));

SELECT pg_catalog.set_config('lock_timeout', least(greatest(10, 400 / 1), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true), pg_catalog.set_config('statement_timeout', '60000ms', true);

DO $ghostsync_catch_up$
DECLARE
  resynced timestamptz;
  backfilled timestamptz;
  accounts uuid[];
  ghosts boolean[];
  counted int;
  failed int := 0;
  failed_state text;
  failed_message text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM ghostsync.objects AS o
                 WHERE o.kind = 'table' AND o.name = 'public.users' AND NOT o.created) THEN
    RETURN;
  END IF;
  SELECT coalesce(max(l.started_at) FILTER (WHERE l.job_name = 'resync_profiles'), '-infinity'),
         coalesce(max(l.started_at) FILTER (WHERE l.job_name = 'backfill_ghost_users'), '-infinity')
    INTO resynced, backfilled
  FROM public.cleanup_audit_log AS l
  WHERE l.status IN ('succeeded', 'partial');
  SELECT pg_catalog.array_agg(c.id), pg_catalog.array_agg(c.ghost) INTO accounts, ghosts
  FROM (SELECT u.id, p.id IS NULL AS ghost
        FROM auth.users AS u LEFT JOIN public.users AS p ON p.id = u.id
        WHERE (p.id IS NULL AND u.created_at >= backfilled) OR (p.id IS NOT NULL AND u.created_at >= resynced)
        LIMIT 1000 + 1) AS c;
  counted := coalesce(pg_catalog.array_length(accounts, 1), 0);
  IF counted > 1000 THEN
    PERFORM pg_catalog.set_config('ghostsync.catch_up', pg_catalog.format(
      'more than %s accounts were made since the backfill or the resync began: none written here; run '
      '`ghostsync repair` for what `ghostsync status` reports', 1000), true);
    RETURN;
  END IF;
  BEGIN
    FOR i IN 1 .. counted LOOP
      PERFORM ghostsync.write_profile(accounts[i], ghosts[i]);
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    FOR i IN 1 .. counted LOOP
      BEGIN
        PERFORM ghostsync.write_profile(accounts[i], ghosts[i]);
      EXCEPTION WHEN OTHERS THEN
        failed := failed + 1;
        GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
        BEGIN
          INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
          VALUES (accounts[i], CASE WHEN ghosts[i] THEN 'INSERT' ELSE 'UPDATE' END, failed_state, failed_message)
          ON CONFLICT (user_id) DO UPDATE
            SET operation = EXCLUDED.operation, sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,
                last_failed_at = pg_catalog.now(), failures = f.failures + 1;
        EXCEPTION WHEN OTHERS THEN
          RAISE WARNING 'ghostsync: profile write for % failed (% %) and could not be recorded: %',
            accounts[i], failed_state, failed_message, SQLERRM;
        END;
      END;
    END LOOP;
  END;
  IF counted > 0 THEN
    PERFORM pg_catalog.set_config('ghostsync.catch_up', pg_catalog.format(
      '%s account(s) made since the backfill or the resync began written, %s failed (ghostsync.sync_failures)',
      counted - failed, failed), true);
  END IF;
END
$ghostsync_catch_up$;

-- params: {'name': 'ghostsync.catch_up'}
SELECT pg_catalog.current_setting(%(name)s, true);

