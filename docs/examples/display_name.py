"""Profiles carry display_name, from raw_user_meta_data ->> 'full_name'

Revision ID: example_display_name
Revises: ghostsync_0011
Create Date: 2026-11-25 12:00:00

Profiles carry display_name: the user's full name as the app's signup form
stores it (raw_user_meta_data ->> 'full_name'), at most 100 characters, kept
in sync on signup and on every change of the metadata. End users write that
metadata themselves: the column is display text, never used for authorization.

- public.users.display_name (text) is added, or an existing column adopted if
  it takes 100 characters and NULL; otherwise the upgrade stops with one line
  before changing anything.
- ghostsync.handle_new_user() and handle_user_updated() write it;
  zz_ghostsync_on_auth_user_updated also fires when the full name changes.
- Existing profiles are filled by the data revision that follows this one.

- Functions: SECURITY DEFINER, SET search_path = '', every name
  schema-qualified; a trigger function never raises (a failed profile write
  is recorded in ghostsync.sync_failures, so the auth service's write goes
  through). kit.install_function keeps EXECUTE revoked from PUBLIC, anon and
  authenticated and records the function as ghostsync's.
- Lock safety: functions first (they lock no table), then ONE lock step, last:
  the triggers on auth.users, then the new columns of public.users. A busy
  table is retried under the lock budget with no lock held in between. A
  backfill never goes here: it is a revision of its own
  (`ghostsync revision --data-job NAME`), so it never shares a transaction
  with this DDL.
- raw_user_meta_data is written by end users: copy it as display text only,
  bounded in length, never for authorization.

Downgrade restores ghostsync_0011's function texts and trigger definitions exactly;
the columns this revision adds keep their values.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "example_display_name"
down_revision = "ghostsync_0011"
branch_labels = None
depends_on = None

# -- what ghostsync_0011 leaves in place, verbatim (chain.declared_at('ghostsync_0011')) --
# downgrade() puts these back exactly. Never edit them, never import them from another revision.
# When this revision leaves a function or trigger unchanged, delete its PREVIOUS_ text, its new
# copy below, and its lines in DECLARES and downgrade().

# declared by ghostsync_0010
PREVIOUS_HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
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
""")

# declared by ghostsync_0010
PREVIOUS_HANDLE_USER_UPDATED = kit.Function("ghostsync.handle_user_updated()", r"""
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
""")



# declared by ghostsync_0010
PREVIOUS_WRITE_PROFILE = kit.Function("ghostsync.write_profile(uuid,boolean)", r"""
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
""")






# declared by ghostsync_0010
PREVIOUS_ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED = kit.Trigger(
    "zz_ghostsync_on_auth_user_updated", "auth.users",
    "CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_updated AFTER UPDATE ON auth.users "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM "
    "(new.email)::text) OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM "
    "(new.email_confirmed_at IS NULL)) OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE "
    "FUNCTION ghostsync.handle_user_updated()",
)

# -- this revision's texts: edit these -------------------------------------------------------
# Copies of the texts above. A trigger's definition is exactly what pg_get_triggerdef prints for it
# under search_path '' (status compares the two; docs/FOLLOW-UP-REVISIONS.md shows how to get it).
# A new function or trigger goes here too, into DECLARES, and into downgrade() as a drop.

HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
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
    INSERT INTO public.users (id, email, email_verified, deleted_at, display_name, created_at, updated_at)
    SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, u.deleted_at,
           pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100),
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
""")

HANDLE_USER_UPDATED = kit.Function("ghostsync.handle_user_updated()", r"""
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
             OR p.display_name IS DISTINCT FROM pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100)
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
          display_name = pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100),
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
""")



WRITE_PROFILE = kit.Function("ghostsync.write_profile(uuid,boolean)", r"""
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
  synced text[] := ARRAY['id', 'email', 'email_verified', 'deleted_at', 'display_name',
                         'created_at', 'updated_at'];
  sources text[] := ARRAY['u.id', 'u.email', 'u.email_confirmed_at IS NOT NULL', 'u.deleted_at',
                          'pg_catalog.left(u.raw_user_meta_data ->> ''full_name'', 100)',
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
""")






ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED = kit.Trigger(
    "zz_ghostsync_on_auth_user_updated", "auth.users",
    "CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_updated AFTER UPDATE ON auth.users "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM "
    "(new.email)::text) OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM "
    "(new.email_confirmed_at IS NULL)) OR (old.deleted_at IS DISTINCT FROM new.deleted_at) OR "
    "((old.raw_user_meta_data ->> 'full_name'::text) IS DISTINCT FROM (new.raw_user_meta_data ->> "
    "'full_name'::text)))) EXECUTE FUNCTION ghostsync.handle_user_updated()",
)

# New profile columns the sync writes, each derived from the auth row ({row}), e.g.
#   DISPLAY_NAME = kit.Column("display_name", "pg_catalog.left({row}.raw_user_meta_data ->> 'full_name', 100)",
#                             "text", nullable=True, max_length=100)
#   COLUMNS = (DISPLAY_NAME,)
# upgrade() adds each, or adopts an existing one only if it takes every value the sync writes
# (type, length, NULL), else stops with one line before changing anything. Fill existing
# profiles in a data revision of its own: `ghostsync revision --data-job backfill_<column>`.
DISPLAY_NAME = kit.Column(
    "display_name", "pg_catalog.left({row}.raw_user_meta_data ->> 'full_name', 100)", "text",
    nullable=True, max_length=100,
)
COLUMNS: tuple[kit.Column, ...] = (DISPLAY_NAME,)

# What ghostsync status, repair, backfill and the drift check read once the database is at this
# revision: the columns it syncs, and the functions and triggers it installs. Extend it with
# what you add; list in removes= what you drop.
DECLARES = kit.Declares(
    columns=COLUMNS,
    functions=(
        HANDLE_NEW_USER,
        HANDLE_USER_UPDATED,
        WRITE_PROFILE,
    ),
    triggers=(
        ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED,
    ),
)


def upgrade() -> None:
    # Functions first: CREATE OR REPLACE FUNCTION locks no table the auth service or the app uses.
    for function in DECLARES.functions:
        kit.install_function(function, revision)
    # Then ONE lock step, last, so its locks are held only until this revision commits and a busy
    # table is retried with no lock held: the triggers on auth.users first, then the columns of
    # public.users (the order a signup locks them in, so no signup in flight waits on this step
    # while holding what it waits for).
    tables = {trigger.table for trigger in DECLARES.triggers} | ({"public.users"} if COLUMNS else set())
    if tables:
        kit.step(
            "\n".join([*(kit.trigger_sql(trigger, revision) for trigger in DECLARES.triggers),
                       *(kit.column_sql(column, revision) for column in COLUMNS)]),
            f"create the triggers and add the columns of {revision}",
            locks=str(len(tables)),
        )


def downgrade() -> None:
    # ghostsync_0011's texts, exactly, each recorded again under the revision that declared it:
    # functions first, then the triggers in ONE lock step. What this revision adds is dropped here
    # (kit.drop_triggers((name, ...), table, functions=(signature, ...))); its columns stay, with
    # their values: no downgrade deletes data.
    kit.install_function(PREVIOUS_HANDLE_NEW_USER, "ghostsync_0010")
    kit.install_function(PREVIOUS_HANDLE_USER_UPDATED, "ghostsync_0010")
    kit.install_function(PREVIOUS_WRITE_PROFILE, "ghostsync_0010")
    kit.step("\n".join((
        kit.trigger_sql(PREVIOUS_ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED, "ghostsync_0010"),
    )), "restore the triggers of ghostsync_0011 on auth.users", locks="1")
