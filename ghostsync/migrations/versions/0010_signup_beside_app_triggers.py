"""Signups beside the app's own trigger: the profile is written at COMMIT, ghostsync's columns only, once.

Revision ID: ghostsync_0010
Revises: ghostsync_0009
Create Date: 2026-12-07

- The syncs move to two constraint triggers, DEFERRABLE INITIALLY DEFERRED,
  zz_ghostsync_on_auth_user_created and zz_ghostsync_on_auth_user_updated:
  they fire at COMMIT, after every immediate trigger of the transaction.
  ghostsync_on_auth_user_created and ghostsync_on_auth_user_updated stay,
  replaced in place by triggers that fire nothing (WHEN (false)): no
  trigger on auth.users is dropped, so ``postgres`` runs this revision with
  the TRIGGER privilege alone (today's Supabase roles without supautils).
  An app's own trigger on
  auth.users that writes public.users (AFTER or BEFORE INSERT, any name, a
  plain INSERT, ON CONFLICT DO NOTHING or DO UPDATE, one table or several)
  has written its row by then, so its plain INSERT never collides with
  ghostsync's and its ON CONFLICT DO NOTHING never loses its columns.
- ghostsync.handle_new_user() reads the account again (NEW is the row as
  inserted; a confirmation in the same transaction, or a delete, may have
  followed) and inserts the profile; where the app's row is already there
  it writes ghostsync's synced columns into it (email, email_verified,
  deleted_at, created_at, updated_at), never an app column.
- ghostsync.handle_user_updated() fires on any UPDATE (no column list: an
  app's BEFORE UPDATE trigger that confirms the account is seen), still only
  WHEN a synced value differs between OLD and NEW, so a sign-in queues no
  event. It reads the account again and writes only a profile that differs:
  an autoconfirmed signup (INSERT and confirming UPDATE in one transaction)
  writes its profile once, from the insert sync.
- An adopted public.users without some synced column: the static statements
  fail with undefined_column and ghostsync.write_profile() writes the
  columns the table has (read from the catalog at that moment).
- The three functions run with SET TimeZone = 'UTC' (as with SET
  search_path = ''): an adopted timestamp (without time zone) column is
  written as UTC whatever the TimeZone of the auth service's session.
- An insert that writes no row and raises nothing (an app's BEFORE INSERT
  trigger on public.users returned NULL) is not taken for success:
  write_profile raises SQLSTATE 02000 (no data) naming the app's BEFORE
  INSERT triggers and INSTEAD rules, as the backfill records it, and the
  caller records it in ghostsync.sync_failures. Where a rule on inserts or
  updates of public.users refuses ON CONFLICT (0A000; an INSTEAD rule
  refuses the insert sync's RETURNING too), write_profile updates the
  profile there and inserts a missing one plainly, and the same check
  applies.
- A constraint of public.users that is DEFERRABLE (initially deferred, or
  made deferred by the caller's SET CONSTRAINTS ALL DEFERRED) is checked
  inside the functions' exception block (SET CONSTRAINTS ... IMMEDIATE),
  looked up on every call: no cached setting is read, so no value of a
  ghostsync.* setting from any source changes what the functions do. The
  constraint is left IMMEDIATE: the functions fire before COMMIT only where
  the caller made them immediate (SET CONSTRAINTS ALL IMMEDIATE), and
  leaving a constraint immediate can only check earlier, never skip a check.

- On an adopted public.users, where 0002's to 0008's insert sync leaves the
  profile to an app trigger that inserts into public.users: a profile made
  since ghostsync_0009's resync began gets ghostsync's columns, an account
  without a profile since ghostsync_0003's backfill began gets its profile
  (the last run of each that ended succeeded or partial), in this revision,
  after the step that locks auth.users: at most 1000 accounts, in one
  subtransaction (more is left to ``ghostsync repair``, which status points
  to); what fails is recorded, and the log says what was written.

- An app trigger on auth.users that inserts a row whose key to public.users
  is checked at once, where no app trigger inserts the profile, worked where it sorted
  after 0008's immediate insert sync; here it would fail every signup (the
  profile comes at COMMIT). Such a trigger (a match on its function's text)
  stops the upgrade with one line naming it, the table and the key, and the
  two ways to make it work; nothing is applied.

Downgrade drops the two constraint triggers (which takes the owner of
auth.users, a member of its role, a superuser, or supautils: elsewhere it
stops with one line naming who can run it, nothing applied), then restores
ghostsync_0008's function texts and trigger definitions exactly (CREATE OR
REPLACE) and drops ghostsync.write_profile(); no row is touched.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0010"
down_revision = "ghostsync_0009"
branch_labels = None
depends_on = None

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

# The syncs at COMMIT: constraint triggers under names of their own. A trigger cannot become a
# constraint trigger in place, and dropping one on auth.users takes its owner (today's Supabase roles
# without supautils give ``postgres`` the TRIGGER privilege only, which creates triggers, constraint
# triggers included, and replaces plain ones, but drops or disables none). Their names sort after the
# app's usual ones (``on_auth_user_created``): under a client's SET CONSTRAINTS ALL IMMEDIATE they fire
# at the statement's end in name order, after an app trigger whose name sorts before ``zz``.
ON_SIGNUP_AT_COMMIT = kit.Trigger(
    "zz_ghostsync_on_auth_user_created", "auth.users",
    "CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_created AFTER INSERT ON auth.users "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_new_user()",
)
ON_UPDATE_AT_COMMIT = kit.Trigger(
    "zz_ghostsync_on_auth_user_updated", "auth.users",
    "CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_updated AFTER UPDATE ON auth.users "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM (new.email)::text) "
    "OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM (new.email_confirmed_at IS NULL)) "
    "OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION ghostsync.handle_user_updated()",
)

# ghostsync_0008's immediate triggers keep their names and fire nothing: CREATE OR REPLACE TRIGGER
# (the TRIGGER privilege) with WHEN (false), which queues no event. Their downgrade puts 0008's back
# the same way.
ON_AUTH_USER_CREATED = kit.Trigger(
    "ghostsync_on_auth_user_created", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users "
    "FOR EACH ROW WHEN (false) EXECUTE FUNCTION ghostsync.handle_new_user()",
)
ON_AUTH_USER_UPDATED = kit.Trigger(
    "ghostsync_on_auth_user_updated", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, deleted_at "
    "ON auth.users FOR EACH ROW WHEN (false) EXECUTE FUNCTION ghostsync.handle_user_updated()",
)

DECLARES = kit.Declares(
    functions=(WRITE_PROFILE, HANDLE_NEW_USER, HANDLE_USER_UPDATED),
    triggers=(ON_AUTH_USER_CREATED, ON_AUTH_USER_UPDATED, ON_SIGNUP_AT_COMMIT, ON_UPDATE_AT_COMMIT),
)

# On an adopted public.users beside an app trigger on auth.users that inserts into public.users, ghostsync_0002's
# to 0008's insert sync leaves a new profile to that trigger (were it written first, the app's plain INSERT would
# fail the signup). ghostsync's columns of such a profile come with the update sync and ghostsync_0009's
# resync, a profile nobody wrote with ghostsync_0003's backfill (or a later `ghostsync backfill`). What
# committed after the last such run that ended succeeded or partial began, before this revision, is caught up
# here: a profile made since the resync began gets ghostsync's columns, an account without a profile since the
# backfill began gets its profile (with no such run, every one counts). This runs after the step that took the
# lock of auth.users, so no signup is in flight and every later one is the syncs' at COMMIT. At most
# CATCH_UP_LIMIT accounts are written here, in one block (one subtransaction; should one fail, each again in a
# block of its own, what fails recorded as the syncs record it); more is left to `ghostsync repair`, which
# status points to, rather than keep signups waiting on the lock. What it did is left in the transaction's
# setting ghostsync.catch_up, which the revision logs.
CATCH_UP_LIMIT = 1000
CATCH_UP = r"""
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
        LIMIT {limit} + 1) AS c;
  counted := coalesce(pg_catalog.array_length(accounts, 1), 0);
  IF counted > {limit} THEN
    PERFORM pg_catalog.set_config('ghostsync.catch_up', pg_catalog.format(
      'more than %s accounts were made since the backfill or the resync began: none written here; run '
      '`ghostsync repair` for what `ghostsync status` reports', {limit}), true);
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
""".replace("{limit}", str(CATCH_UP_LIMIT))


# An app trigger on auth.users that inserts a row whose foreign key to public.users is checked at once (not
# DEFERRABLE INITIALLY DEFERRED), and writes no profile itself, ran after ghostsync's immediate insert sync
# where its name sorted after it; from this revision the profile is written at COMMIT, so that row's key
# would fail every signup. Such a trigger (a match on its function's text: INSERT INTO the table), where no app
# trigger on auth.users inserts the profile (INSERT INTO public.users), stops the upgrade before anything is
# applied.
REFUSE_KEYED_APP_TRIGGER = r"""
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
"""


# ghostsync_0008's texts, verbatim.
PREVIOUS_HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
<<sync>>
DECLARE
  failed_state text;
  failed_message text;
  deferred record;
  has_deferred boolean;
  remembered text;
  already boolean;
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
  BEGIN
    -- A plain INSERT: a profile already there (the app's, a backfill's) is a unique
    -- violation, taken below for the success it is; no speculative insertion.
    INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
    VALUES (
      NEW.id,
      NEW.email,
      NEW.email_confirmed_at IS NOT NULL,
      NEW.deleted_at,
      coalesce(NEW.created_at, pg_catalog.now()),
      coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())
    )
    -- A deferred constraint of the app's profile table would be checked at COMMIT,
    -- outside this block, and fail the auth service's write: it is checked here
    -- instead. Whether the table has one is read with the insert, and remembered for
    -- the rest of the transaction: from the insert on, the transaction holds a lock
    -- on public.users under which no constraint of it can be added or dropped.
    RETURNING EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                      WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred)
    INTO sync.has_deferred;
    IF has_deferred THEN
      FOR deferred IN
        SELECT c.conname FROM pg_catalog.pg_constraint AS c
        WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred
      LOOP
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferred.conname);
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I DEFERRED', deferred.conname);
      END LOOP;
    END IF;
    IF has_deferred IS NOT NULL THEN
      remembered := pg_catalog.set_config('ghostsync.deferred_profile_constraints', has_deferred::text, true);
    END IF;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    IF failed_state = '23505' THEN
      -- this account's profile already there (the app's, a backfill's): nothing failed
      already := EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = NEW.id);
    END IF;
    IF NOT coalesce(already, false) THEN
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
  END;
  RETURN NEW;
END sync
$function$;
""")

PREVIOUS_HANDLE_USER_UPDATED = kit.Function("ghostsync.handle_user_updated()", r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_user_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
  deferred record;
  has_deferred boolean;
  remembered text;
BEGIN
  BEGIN
    UPDATE public.users
    SET email = NEW.email,
        email_verified = NEW.email_confirmed_at IS NOT NULL,
        deleted_at = NEW.deleted_at,
        updated_at = pg_catalog.now()
    WHERE id = NEW.id;
    IF NOT FOUND THEN
      -- The profile may be being written right now by another transaction (a
      -- backfill batch that read this account before this change): wait for it,
      -- then write this row's values over it. The newest auth row always wins.
      INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
      VALUES (
        NEW.id,
        NEW.email,
        NEW.email_confirmed_at IS NOT NULL,
        NEW.deleted_at,
        coalesce(NEW.created_at, pg_catalog.now()),
        pg_catalog.now()
      )
      ON CONFLICT (id) DO UPDATE
        SET email = EXCLUDED.email,
            email_verified = EXCLUDED.email_verified,
            deleted_at = EXCLUDED.deleted_at,
            updated_at = EXCLUDED.updated_at;
    END IF;
    -- A deferred constraint of the app's profile table would be checked at COMMIT,
    -- outside this block, and fail the auth service's write: it is checked here
    -- instead. Whether the table has one is read once a transaction (the signup's
    -- insert sync may have read it already): the statement above locked public.users,
    -- and no constraint of it can be added or dropped until the transaction ends.
    remembered := pg_catalog.current_setting('ghostsync.deferred_profile_constraints', true);
    IF remembered IS NULL OR remembered = '' THEN
      has_deferred := EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                              WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred);
      remembered := pg_catalog.set_config('ghostsync.deferred_profile_constraints', has_deferred::text, true);
    ELSE
      has_deferred := remembered = 'true';
    END IF;
    IF has_deferred THEN
      FOR deferred IN
        SELECT c.conname FROM pg_catalog.pg_constraint AS c
        WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred
      LOOP
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferred.conname);
        EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I DEFERRED', deferred.conname);
      END LOOP;
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

PREVIOUS_ON_AUTH_USER_CREATED = kit.Trigger(
    "ghostsync_on_auth_user_created", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_created AFTER INSERT ON auth.users "
    "FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_new_user()",
)

PREVIOUS_ON_AUTH_USER_UPDATED = kit.Trigger(
    "ghostsync_on_auth_user_updated", "auth.users",
    "CREATE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email, email_confirmed_at, deleted_at "
    "ON auth.users FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM (new.email)::text) "
    "OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM (new.email_confirmed_at IS NULL)) "
    "OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION ghostsync.handle_user_updated()",
)


def upgrade() -> None:
    kit.check(REFUSE_KEYED_APP_TRIGGER)
    for function in DECLARES.functions:
        kit.install_function(function, revision)
    # One step, one lock of auth.users: the constraint triggers are created (no trigger of their
    # names is there to drop) and 0008's triggers replaced in place. Nothing is dropped.
    kit.install_triggers(DECLARES.triggers, revision)
    kit.step(CATCH_UP, "write the profiles of accounts made since the backfill or the resync began")
    kit.log_setting("ghostsync.catch_up")


def downgrade() -> None:
    # First, so that where the role may not drop a trigger on auth.users (today's roles without
    # supautils) the downgrade stops with one line before anything else: a constraint trigger can be
    # neither replaced nor disabled without the owner, and left in place it would call 0008's
    # handle_new_user() a second time at COMMIT for every signup.
    kit.drop_triggers((ON_SIGNUP_AT_COMMIT.name, ON_UPDATE_AT_COMMIT.name), "auth.users")
    kit.install_function(PREVIOUS_HANDLE_NEW_USER, "ghostsync_0008")
    kit.install_function(PREVIOUS_HANDLE_USER_UPDATED, "ghostsync_0008")
    kit.restore_triggers((PREVIOUS_ON_AUTH_USER_CREATED, PREVIOUS_ON_AUTH_USER_UPDATED), "ghostsync_0008")
    kit.drop_function("ghostsync.write_profile(uuid,boolean)")
