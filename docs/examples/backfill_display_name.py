"""Backfill display_name

Revision ID: example_backfill_display_name
Revises: example_display_name
Create Date: 2026-11-25 12:00:00

Existing profiles get their display_name: every profile written before
example_display_name synced the column (display_name NULL while the account
has a full name), and any profile that disagrees with its account on another
synced column, is rewritten from its account (email, email_verified,
deleted_at, display_name).

A batched job in a revision of its own, so it never shares a transaction with
DDL: it walks auth.users in keyset batches, each its own short transaction
online (one DO block offline), and rewrites the synced columns of every
profile that disagrees with its account. It locks those accounts FOR SHARE
while it writes, so an account changed meanwhile is written with its newest
values, by this job or by the update sync, whichever commits last. It never
creates or deletes a profile.

Every run writes one cleanup_audit_log row, job_name 'backfill_display_name'
(records_affected = profiles rewritten); `ghostsync status` shows its last run.
Settings: -x batch_size=N / GHOSTSYNC_BATCH_SIZE (default 5000), -x dead_after.

Downgrade changes nothing: the rewritten values are the accounts' own.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "example_backfill_display_name"
down_revision = "example_display_name"
branch_labels = None
depends_on = None

JOB_NAME = "backfill_display_name"
DEFAULT_BATCH_SIZE = 5000
# Batches take well under a second; a run silent for a minute is dead.
DEFAULT_DEAD_AFTER = "60s"

# A run is dead when the server session that started it is gone, or (through a transaction-mode
# pooler, whose server sessions outlive their clients) when it has made no progress for :dead_after.
MARK_INTERRUPTED = r"""
UPDATE public.cleanup_audit_log AS l
SET status = 'interrupted',
    finished_at = now(),
    details = l.details || jsonb_build_object('error', 'the run ended without finishing')
WHERE l.job_name = :job
  AND l.status = 'running'
  AND (
    NOT EXISTS (
      SELECT 1 FROM pg_stat_activity AS a
      WHERE a.pid = (l.details ->> 'pid')::int
        AND a.backend_start = (l.details ->> 'backend_start')::timestamptz
    )
    OR coalesce((l.details ->> 'heartbeat_at')::timestamptz, l.started_at)
       < clock_timestamp() - make_interval(secs => CAST(:dead_after AS double precision))
  )
"""

START = r"""
INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
SELECT :job, 'running', 0, clock_timestamp(),
       jsonb_build_object('mode', CAST(:run_mode AS text), 'pid', pg_backend_pid(),
                          'backend_start', a.backend_start, 'batches', 0,
                          'heartbeat_at', clock_timestamp())
FROM pg_stat_activity AS a
WHERE a.pid = pg_backend_pid()
RETURNING id
"""

# One batch, one statement: rewrite the stale profiles among the next :batch_size accounts by id
# (synced columns as example_display_name declares them: email, email_verified, deleted_at,
# display_name) and log the progress, atomically.
BATCH = r"""
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(:lock_timeout AS text), true)) IS NOT NULL
    AND (CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid))
  ORDER BY u.id
  LIMIT :batch_size
),
stale AS (
  SELECT u.*
  FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
  WHERE u.id IN (SELECT b.id FROM batch AS b)
    AND (p."email" IS DISTINCT FROM (u.email)
     OR p."email_verified" IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL)
     OR p."deleted_at" IS DISTINCT FROM (u.deleted_at)
     OR p."display_name" IS DISTINCT FROM (pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100)))
  FOR SHARE OF u
),
repaired AS (
  UPDATE public.users AS p
  SET "email" = s.email,
      "email_verified" = s.email_confirmed_at IS NOT NULL,
      "updated_at" = pg_catalog.now(),
      "deleted_at" = s.deleted_at,
      "display_name" = pg_catalog.left(s.raw_user_meta_data ->> 'full_name', 100)
  FROM stale AS s
  WHERE p.id = s.id
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object(
        'batches', coalesce((details ->> 'batches')::int, 0) + 1,
        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1),
        'heartbeat_at', clock_timestamp())
  WHERE id = :run_id AND EXISTS (SELECT 1 FROM batch)
  RETURNING 1
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM repaired) AS repaired,
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

STATEMENTS = kit.BackfillStatements(
    mark_interrupted=MARK_INTERRUPTED, start=START, batch=BATCH, finish=FINISH
)

# Offline the batches run inside the database, in this revision's own transaction.
OFFLINE_TEMPLATE = r"""
DO $ghostsync$
DECLARE
  run_id bigint;
  -- "id > after_id" alone, so the plan PL/pgSQL caches keeps the index range
  -- scan; the nil uuid, which no walk step passes, is handled first.
  after_id uuid := '00000000-0000-0000-0000-000000000000';
  last_id uuid;
  n_repaired bigint;
  total bigint := 0;
  n_batches int := 0;
BEGIN
  INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
  VALUES ('backfill_display_name', 'running', 0, clock_timestamp(),
          jsonb_build_object('mode', 'offline', 'pid', pg_backend_pid(), 'batches', 0))
  RETURNING id INTO run_id;
  UPDATE public.users AS p
  SET "email" = u.email,
      "email_verified" = u.email_confirmed_at IS NOT NULL,
      "updated_at" = pg_catalog.now(),
      "deleted_at" = u.deleted_at,
      "display_name" = pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100)
  FROM (SELECT * FROM auth.users AS a WHERE a.id = after_id FOR SHARE) AS u
  WHERE p.id = u.id
    AND (p."email" IS DISTINCT FROM (u.email)
     OR p."email_verified" IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL)
     OR p."deleted_at" IS DISTINCT FROM (u.deleted_at)
     OR p."display_name" IS DISTINCT FROM (pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100)));
  GET DIAGNOSTICS total = ROW_COUNT;
  LOOP
    WITH batch AS (
      SELECT u.id
      FROM auth.users AS u
      WHERE u.id > after_id
      ORDER BY u.id
      LIMIT {batch_size}
    ),
    stale AS (
      SELECT u.*
      FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
      WHERE u.id IN (SELECT b.id FROM batch AS b)
        AND (p."email" IS DISTINCT FROM (u.email)
             OR p."email_verified" IS DISTINCT FROM (u.email_confirmed_at IS NOT NULL)
             OR p."deleted_at" IS DISTINCT FROM (u.deleted_at)
             OR p."display_name" IS DISTINCT FROM (pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100)))
      FOR SHARE OF u
    ),
    repaired AS (
      UPDATE public.users AS p
      SET "email" = s.email,
          "email_verified" = s.email_confirmed_at IS NOT NULL,
          "updated_at" = pg_catalog.now(),
          "deleted_at" = s.deleted_at,
          "display_name" = pg_catalog.left(s.raw_user_meta_data ->> 'full_name', 100)
      FROM stale AS s
      WHERE p.id = s.id
      RETURNING 1
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM repaired)
    INTO last_id, n_repaired;
    EXIT WHEN last_id IS NULL;
    after_id := last_id;
    total := total + n_repaired;
    n_batches := n_batches + 1;
  END LOOP;
  UPDATE public.cleanup_audit_log
  SET status = 'succeeded', records_affected = total, finished_at = clock_timestamp(),
      details = details || jsonb_build_object('batches', n_batches, 'last_id', after_id)
  WHERE id = run_id;
END
$ghostsync$;
"""

DECLARES = kit.Declares(jobs=(JOB_NAME,))


def upgrade() -> None:
    kit.backfill(STATEMENTS, OFFLINE_TEMPLATE, job_name=JOB_NAME, default_batch_size=DEFAULT_BATCH_SIZE,
                 default_dead_after=DEFAULT_DEAD_AFTER)


def downgrade() -> None:
    # The rewritten values are the accounts' own: nothing to undo.
    pass
