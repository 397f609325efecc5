"""Resync: every existing profile brought up to date with its account (deleted_at included).

Revision ID: ghostsync_0009
Revises: ghostsync_0008
Create Date: 2026-11-25

Profiles written before the sync covered a column, or by a sync that could
lose a concurrent change, can disagree with auth.users: a soft-deleted ghost
repaired by ghostsync_0003 has deleted_at NULL (the column came with
ghostsync_0005), a pre-release install's update sync could keep a
backfill's stale copy. This job walks auth.users in keyset batches, each its
own short transaction, and rewrites the synced columns (email,
email_verified, deleted_at) of every profile that disagrees. It locks the
accounts of the profiles it rewrites FOR SHARE while it writes them, so an
account changed meanwhile is written with its newest values, by this job or
by the update sync, whichever commits last. It never creates or deletes a
profile. A fresh install leaves no stale profile. It compares and writes
only the synced columns the table has (an adopted table other users can read
may lack some: ghostsync_0001), a ``timestamp without time zone`` as UTC.

Every run writes one cleanup_audit_log row, job_name 'resync_profiles'
(records_affected = profiles rewritten).

Downgrade changes nothing: the rewritten values are the accounts' own.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0009"
down_revision = "ghostsync_0008"
branch_labels = None
depends_on = None

JOB_NAME = "resync_profiles"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_DEAD_AFTER = "60s"

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
  SELECT u.id, u.email, u.email_confirmed_at, u.deleted_at
  FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
  WHERE u.id IN (SELECT b.id FROM batch AS b)
    AND {stale:p:u}
  FOR SHARE OF u
),
repaired AS (
  UPDATE public.users AS p
  SET {sets:s}
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

# Offline the batches run inside the database, in the migration's transaction.
OFFLINE_TEMPLATE = r"""
DO $ghostsync$
DECLARE
  run_id bigint;
  after_id uuid := '00000000-0000-0000-0000-000000000000';
  last_id uuid;
  n_repaired bigint;
  total bigint := 0;
  n_batches int := 0;
BEGIN
  INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
  VALUES ('resync_profiles', 'running', 0, clock_timestamp(),
          jsonb_build_object('mode', 'offline', 'pid', pg_backend_pid(), 'batches', 0))
  RETURNING id INTO run_id;
  UPDATE public.users AS p
  SET {sets:u}
  FROM (SELECT * FROM auth.users AS a WHERE a.id = after_id FOR SHARE) AS u
  WHERE p.id = u.id
    AND {stale:p:u};
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
      SELECT u.id, u.email, u.email_confirmed_at, u.deleted_at
      FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
      WHERE u.id IN (SELECT b.id FROM batch AS b)
        AND {stale:p:u}
      FOR SHARE OF u
    ),
    repaired AS (
      UPDATE public.users AS p
      SET {sets:s}
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

# What the resync compares and rewrites: the synced columns the table has (an adopted table
# other users can read may lack some: ghostsync_0001), as UTC into a timestamp.
WRITES = (
    kit.Write("email", "{row}.email", compared=True),
    kit.Write("email_verified", "{row}.email_confirmed_at IS NOT NULL", compared=True),
    kit.Write("deleted_at", "{row}.deleted_at", compared=True),
    kit.Write("updated_at", "now()", on_rewrite="now()"),
)

DECLARES = kit.Declares(jobs=(JOB_NAME,))


def upgrade() -> None:
    kit.backfill(STATEMENTS, OFFLINE_TEMPLATE, job_name=JOB_NAME, default_batch_size=DEFAULT_BATCH_SIZE,
                 default_dead_after=DEFAULT_DEAD_AFTER, writes=WRITES)


def downgrade() -> None:
    # The rewritten values are the accounts' own: nothing to undo.
    pass
