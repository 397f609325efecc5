"""Profiles carry display_name, copied from raw_user_meta_data and kept in sync.

Revision ID: ghostsync_0008
Revises: ghostsync_0007
Create Date: 2026-11-24

The worked example of docs/FOLLOW-UP-REVISIONS.md; it is not part of
ghostsync's chain.

- public.users gets a nullable text column display_name: a catalog-only
  change, under a short lock_timeout.
- public.handle_new_user() and public.handle_user_updated() are replaced by
  versions that also write display_name; on_auth_user_updated also fires when
  raw_user_meta_data's display_name changes (and on nothing else new).
- A batched backfill fills display_name of every existing profile, one
  cleanup_audit_log row per run (job_name 'backfill_display_name').

raw_user_meta_data is written by end users (supabase.auth.updateUser): the
profile takes display_name only when it is a JSON string, cut to 100
characters, as text to show. Nothing may base an authorization decision on it.

Downgrade restores ghostsync_0007's trigger and ghostsync_0006's and
ghostsync_0007's function texts exactly, and keeps the column and its values.

Settings: ``-x batch_size=N`` or GHOSTSYNC_BATCH_SIZE (default 5000).
"""

from __future__ import annotations

import logging
import os

from alembic import context, op
from alembic.util import CommandError

from ghostsync.migrations.kit import BackfillStatements, run_batched
from ghostsync.migrations.kit import execute_guarded
from ghostsync.migrations.kit import raise_ghostsync_errors

revision = "ghostsync_0008"
down_revision = "ghostsync_0007"
branch_labels = None
depends_on = None

JOB_NAME = "backfill_display_name"
DEFAULT_BATCH_SIZE = 5000
log = logging.getLogger("alembic.ghostsync")

ADD_DISPLAY_NAME = r"""
DO $ghostsync$
DECLARE
  found_type text;
BEGIN
  SELECT format_type(a.atttypid, NULL) INTO found_type
  FROM pg_attribute a
  WHERE a.attrelid = 'public.users'::regclass AND a.attname = 'display_name'
    AND a.attnum > 0 AND NOT a.attisdropped;
  IF found_type IS NULL THEN
    ALTER TABLE public.users ADD COLUMN display_name text;
  ELSIF found_type NOT IN ('text', 'character varying') THEN
    RAISE EXCEPTION 'ghostsync: public.users.display_name is %, needs text', found_type;
  END IF;
END
$ghostsync$;
"""

# ghostsync_0006's function, plus display_name.
HANDLE_NEW_USER = r"""
CREATE OR REPLACE FUNCTION public.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
BEGIN
  BEGIN
    INSERT INTO public.users (id, email, email_verified, display_name, deleted_at, created_at, updated_at)
    VALUES (
      NEW.id,
      NEW.email,
      NEW.email_confirmed_at IS NOT NULL,
      CASE WHEN pg_catalog.jsonb_typeof(NEW.raw_user_meta_data -> 'display_name') = 'string'
           THEN pg_catalog.left(NEW.raw_user_meta_data ->> 'display_name', 100) END,
      NEW.deleted_at,
      coalesce(NEW.created_at, pg_catalog.now()),
      coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())
    )
    ON CONFLICT (id) DO NOTHING;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
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
  END;
  RETURN NEW;
END
$function$;
"""

# ghostsync_0007's function, plus display_name.
HANDLE_USER_UPDATED = r"""
CREATE OR REPLACE FUNCTION public.handle_user_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
  new_display_name text;
BEGIN
  BEGIN
    new_display_name :=
      CASE WHEN pg_catalog.jsonb_typeof(NEW.raw_user_meta_data -> 'display_name') = 'string'
           THEN pg_catalog.left(NEW.raw_user_meta_data ->> 'display_name', 100) END;
    UPDATE public.users
    SET email = NEW.email,
        email_verified = NEW.email_confirmed_at IS NOT NULL,
        display_name = new_display_name,
        deleted_at = NEW.deleted_at,
        updated_at = pg_catalog.now()
    WHERE id = NEW.id;
    IF NOT FOUND THEN
      INSERT INTO public.users (id, email, email_verified, display_name, deleted_at, created_at, updated_at)
      VALUES (
        NEW.id,
        NEW.email,
        NEW.email_confirmed_at IS NOT NULL,
        new_display_name,
        NEW.deleted_at,
        coalesce(NEW.created_at, pg_catalog.now()),
        pg_catalog.now()
      )
      ON CONFLICT (id) DO NOTHING;
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
"""

# ghostsync_0007's trigger, plus raw_user_meta_data: it fires when the display
# name changes, and still not on a sign-in or a change of any other metadata key.
UPDATED_TRIGGER = r"""
CREATE OR REPLACE TRIGGER on_auth_user_updated
  AFTER UPDATE OF email, email_confirmed_at, deleted_at, raw_user_meta_data ON auth.users
  FOR EACH ROW
  WHEN (OLD.email IS DISTINCT FROM NEW.email
        OR (OLD.email_confirmed_at IS NULL) IS DISTINCT FROM (NEW.email_confirmed_at IS NULL)
        OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at
        OR (OLD.raw_user_meta_data -> 'display_name') IS DISTINCT FROM (NEW.raw_user_meta_data -> 'display_name'))
  EXECUTE FUNCTION public.handle_user_updated();
"""

# ghostsync_0006's text, verbatim.
PREVIOUS_HANDLE_NEW_USER = r"""
CREATE OR REPLACE FUNCTION public.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
BEGIN
  BEGIN
    INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
    VALUES (
      NEW.id,
      NEW.email,
      NEW.email_confirmed_at IS NOT NULL,
      NEW.deleted_at,
      coalesce(NEW.created_at, pg_catalog.now()),
      coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())
    )
    ON CONFLICT (id) DO NOTHING;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
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
  END;
  RETURN NEW;
END
$function$;
"""

# ghostsync_0007's text, verbatim.
PREVIOUS_HANDLE_USER_UPDATED = r"""
CREATE OR REPLACE FUNCTION public.handle_user_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
BEGIN
  BEGIN
    UPDATE public.users
    SET email = NEW.email,
        email_verified = NEW.email_confirmed_at IS NOT NULL,
        deleted_at = NEW.deleted_at,
        updated_at = pg_catalog.now()
    WHERE id = NEW.id;
    IF NOT FOUND THEN
      INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
      VALUES (
        NEW.id,
        NEW.email,
        NEW.email_confirmed_at IS NOT NULL,
        NEW.deleted_at,
        coalesce(NEW.created_at, pg_catalog.now()),
        pg_catalog.now()
      )
      ON CONFLICT (id) DO NOTHING;
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
"""

# ghostsync_0007's trigger, verbatim.
PREVIOUS_UPDATED_TRIGGER = r"""
CREATE OR REPLACE TRIGGER on_auth_user_updated
  AFTER UPDATE OF email, email_confirmed_at, deleted_at ON auth.users
  FOR EACH ROW
  WHEN (OLD.email IS DISTINCT FROM NEW.email
        OR (OLD.email_confirmed_at IS NULL) IS DISTINCT FROM (NEW.email_confirmed_at IS NULL)
        OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
  EXECUTE FUNCTION public.handle_user_updated();
"""

# -- the backfill: the statements run_batched needs, frozen here --------------

MARK_INTERRUPTED = r"""
UPDATE public.cleanup_audit_log AS l
SET status = 'interrupted',
    finished_at = now(),
    details = l.details || jsonb_build_object('error', 'the run ended without finishing (its session is gone)')
WHERE l.job_name = :job
  AND l.status = 'running'
  AND NOT EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = (l.details ->> 'pid')::int
      AND a.backend_start = (l.details ->> 'backend_start')::timestamptz
  )
"""

START = r"""
INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
SELECT :job, 'running', 0, clock_timestamp(),
       jsonb_build_object('mode', CAST(:run_mode AS text), 'pid', pg_backend_pid(),
                          'backend_start', a.backend_start, 'batches', 0)
FROM pg_stat_activity AS a
WHERE a.pid = pg_backend_pid()
RETURNING id
"""

# One batch, one statement: the next :batch_size profiles by id take the
# display name of their auth user. FOR SHARE OF u reads each auth row's latest
# version and holds off a concurrent metadata update until the batch commits,
# so the backfill never writes back a display name the trigger has replaced.
# Locks go auth.users row, then public.users row: the order of the auth
# service's writes and their triggers, so no deadlock. updated_at is left
# alone: nothing about the user changed.
BATCH = r"""
WITH batch AS (
  SELECT p.id
  FROM public.users AS p
  WHERE CAST(:after AS uuid) IS NULL OR p.id > CAST(:after AS uuid)
  ORDER BY p.id
  LIMIT :batch_size
),
source AS (
  SELECT u.id,
         CASE WHEN jsonb_typeof(u.raw_user_meta_data -> 'display_name') = 'string'
              THEN left(u.raw_user_meta_data ->> 'display_name', 100) END AS display_name
  FROM auth.users AS u
  JOIN batch ON batch.id = u.id
  FOR SHARE OF u
),
filled AS (
  UPDATE public.users AS p
  SET display_name = source.display_name
  FROM source
  WHERE p.id = source.id AND p.display_name IS DISTINCT FROM source.display_name
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM filled),
      details = details || jsonb_build_object(
        'batches', coalesce((details ->> 'batches')::int, 0) + 1,
        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1))
  WHERE id = :run_id AND EXISTS (SELECT 1 FROM batch)
  RETURNING 1
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM filled) AS repaired,
       (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM progress) AS logged
"""

FINISH = r"""
UPDATE public.cleanup_audit_log
SET status = :run_status,
    finished_at = clock_timestamp(),
    details = CASE WHEN CAST(:run_error AS text) IS NULL THEN details
                   ELSE details || jsonb_build_object('error', CAST(:run_error AS text)) END
WHERE id = :run_id
"""

STATEMENTS = BackfillStatements(
    mark_interrupted=MARK_INTERRUPTED, start=START, batch=BATCH, finish=FINISH
)

# Offline (--sql) the same batches run inside one DO block.
OFFLINE_BACKFILL = r"""
DO $ghostsync$
DECLARE
  run_id bigint;
  after_id uuid := NULL;
  last_id uuid;
  n_filled bigint;
  total bigint := 0;
  n_batches int := 0;
BEGIN
  INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
  VALUES ('backfill_display_name', 'running', 0, clock_timestamp(),
          jsonb_build_object('mode', 'offline', 'pid', pg_backend_pid(), 'batches', 0))
  RETURNING id INTO run_id;
  LOOP
    WITH batch AS (
      SELECT p.id FROM public.users AS p
      WHERE after_id IS NULL OR p.id > after_id
      ORDER BY p.id
      LIMIT {batch_size}
    ),
    source AS (
      SELECT u.id,
             CASE WHEN jsonb_typeof(u.raw_user_meta_data -> 'display_name') = 'string'
                  THEN left(u.raw_user_meta_data ->> 'display_name', 100) END AS display_name
      FROM auth.users AS u
      JOIN batch ON batch.id = u.id
      FOR SHARE OF u
    ),
    filled AS (
      UPDATE public.users AS p
      SET display_name = source.display_name
      FROM source
      WHERE p.id = source.id AND p.display_name IS DISTINCT FROM source.display_name
      RETURNING 1
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM filled)
    INTO last_id, n_filled;
    EXIT WHEN last_id IS NULL;
    after_id := last_id;
    total := total + n_filled;
    n_batches := n_batches + 1;
  END LOOP;
  UPDATE public.cleanup_audit_log
  SET status = 'succeeded', records_affected = total, finished_at = clock_timestamp(),
      details = details || jsonb_build_object('batches', n_batches, 'last_id', after_id)
  WHERE id = run_id;
END
$ghostsync$;
"""

FUNCTIONS = {
    "public.handle_new_user()": HANDLE_NEW_USER,
    "public.handle_user_updated()": HANDLE_USER_UPDATED,
}
TRIGGERS = ("on_auth_user_updated",)


def batch_size() -> int:
    value = (
        context.get_x_argument(as_dictionary=True).get("batch_size")
        or os.environ.get("GHOSTSYNC_BATCH_SIZE")
        or str(DEFAULT_BATCH_SIZE)
    )
    if not value.isdigit() or int(value) < 1:
        raise CommandError(f"bad batch_size {value!r}: use a whole number of at least 1")
    return int(value)


def upgrade() -> None:
    size = batch_size()
    with raise_ghostsync_errors():
        execute_guarded(ADD_DISPLAY_NAME, "add public.users.display_name")
    # CREATE OR REPLACE keeps each function's owner and grants (EXECUTE stays revoked).
    op.execute(HANDLE_NEW_USER)
    op.execute(HANDLE_USER_UPDATED)
    execute_guarded(UPDATED_TRIGGER, "replace trigger on_auth_user_updated on auth.users")
    # The backfill starts once the new functions and trigger are committed, so
    # every metadata change from then on is synced by the trigger.
    migration = op.get_context()
    if migration.as_sql:
        op.execute(OFFLINE_BACKFILL.format(batch_size=size))
        return
    with migration.autocommit_block():
        result = run_batched(op.get_bind(), STATEMENTS, batch_size=size, mode="online", job_name=JOB_NAME)
    log.info(
        "ghostsync: display_name backfill filled %d profile(s) in %d batch(es); audit row %d",
        result.repaired, result.batches, result.run_id,
    )


def downgrade() -> None:
    execute_guarded(PREVIOUS_UPDATED_TRIGGER, "restore trigger on_auth_user_updated on auth.users")
    op.execute(PREVIOUS_HANDLE_USER_UPDATED)
    op.execute(PREVIOUS_HANDLE_NEW_USER)
    # display_name and its values stay: no downgrade deletes profile data.
