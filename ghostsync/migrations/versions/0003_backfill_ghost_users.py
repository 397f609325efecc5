"""Backfill: create the missing profile of every existing ghost user.

Revision ID: ghostsync_0003
Revises: ghostsync_0002
Create Date: 2026-11-24

Runs after the trigger exists, so an ordinary signup cannot leave a ghost behind
it; an account committed behind the walk without the trigger firing (a replica-mode
import, a transaction open when the walk began) is found by the sweep that ends the
run: it waits for the transactions writing auth.users to end (at most ``-x
writers_wait``, else the run ends interrupted and the upgrade fails with one line),
then repairs the ghosts among the row versions written since the walk began. Email,
phone and anonymous users are repaired alike (email may be NULL). The repair
walks auth.users in keyset batches by id; online, each batch is its own short
transaction (Alembic's autocommit block), so no lock is held for the length
of the backfill. Offline (``--sql``), the same batches run inside one DO block,
without the sweep (a script cannot wait for other transactions).

Each batch locks the ghosts it repairs FOR KEY SHARE while it writes their
profiles, so an account deleted meanwhile is either gone before the batch
reads it or deleted after the profile exists (and the delete sync, or the
foreign key, removes it): no profile outlives its account. A profile the
signup trigger or a concurrent confirmation writes first wins (ON CONFLICT
DO NOTHING); the update sync of later revisions brings a profile written
here up to date if the account changes before this batch commits.

It writes the synced columns the table has (an adopted table other users
can read may lack some: ghostsync_0001), a ``timestamp without time zone``
as UTC. A row that cannot be written (an app's CHECK, an app column NOT NULL
without a default) does not stop the others: it is named in the audit row's
``unrepairable`` and the run ends 'partial' (the migration goes on; status
counts the ghost, ``ghostsync repair`` records it with its cause).

Every run writes one cleanup_audit_log row, job_name 'backfill_ghost_users':
status running, then succeeded (records_affected = profiles created), partial,
or failed (details.error), in which case the migration fails too. A run cut off
by a crash stays 'running' until the next run marks it 'interrupted' (its
session gone, or no progress for a minute). A second
run finds nothing and logs 0.

Downgrade deletes nothing: a repaired profile is the user's profile.

Settings: ``-x batch_size=N`` or GHOSTSYNC_BATCH_SIZE (default 5000); ``-x dead_after``;
``-x lock_timeout`` / ``lock_retries`` / ``lock_backoff`` (a batch's row-lock waits); ``-x writers_wait``.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0003"
down_revision = "ghostsync_0002"
branch_labels = None
depends_on = None

JOB_NAME = "backfill_ghost_users"
DEFAULT_BATCH_SIZE = 5000
# Batches take well under a second; a run silent for a minute is dead.
DEFAULT_DEAD_AFTER = "60s"

# A run is dead when the server session that started it is gone, or (through a
# transaction-mode pooler, whose server sessions outlive their clients) when it
# has made no progress for :dead_after seconds.
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

# One batch, one statement: repair the ghosts among the next :batch_size auth
# users by id and record the progress in the run's audit row, atomically. The
# profile check is a scalar sub-select, a primary-key probe per row whatever
# the statistics say (an anti-join can be planned as a nested loop over a
# sequential scan of public.users, quadratic in the ghosts it inserts). An auth
# user deleted while the batch runs makes the foreign key fail (23503): the
# runner then repeats the batch, which no longer sees that user.
BATCH = r"""
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(:lock_timeout AS text), true)) IS NOT NULL
    AND (CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid))
  ORDER BY u.id
  LIMIT :batch_size
),
ghosts AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
  FROM auth.users AS u
  WHERE u.id IN (SELECT b.id FROM batch AS b WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL)
  FOR KEY SHARE OF u
),
repaired AS (
  INSERT INTO public.users (id{columns})
  SELECT g.id{values:g}
  FROM ghosts AS g
  ON CONFLICT (id) DO NOTHING
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

# The sweep. The walk by id cannot see an account written behind its position while it runs
# without a profile: one a replica-mode import (session_replication_role = replica: no trigger
# fires) or a transaction open before the walk began commits there. Every such row version was
# written by a transaction at or after the oldest one running when the walk began (the horizon).
HORIZON = r"""
SELECT (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint % 4294967296)::text AS horizon
"""

# The other transactions holding a write lock on auth.users now (by virtual transaction id), and
# how many of them still hold it: the sweep waits for them to end before it reads.
WRITERS = r"""
SELECT CAST(ARRAY(
  SELECT DISTINCT l.virtualtransaction
  FROM pg_catalog.pg_locks AS l
  WHERE l.locktype = 'relation' AND l.relation = 'auth.users'::pg_catalog.regclass
    AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database())
    AND l.granted AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
    AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
) AS text[]) AS writers
"""

WRITERS_OPEN = r"""
SELECT count(DISTINCT l.virtualtransaction) AS open
FROM pg_catalog.pg_locks AS l
WHERE l.virtualtransaction = ANY (CAST(:writers AS text[])) AND l.locktype = 'relation'
  AND l.relation = 'auth.users'::pg_catalog.regclass
"""

# One statement: the ghosts among the row versions written at or after the horizon (age() counts
# back from the same transaction for both sides; a frozen row keeps its old xmin and is left out).
REPAIR_RECENT = r"""
WITH recent AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(:lock_timeout AS text), true)) IS NOT NULL
    AND pg_catalog.age(u.xmin) <= (SELECT pg_catalog.age(CAST(CAST(:horizon AS text) AS xid)))
    AND (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL
),
ghosts AS (
  SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
  FROM auth.users AS u
  WHERE u.id IN (SELECT r.id FROM recent AS r)
  FOR KEY SHARE OF u
),
repaired AS (
  INSERT INTO public.users (id{columns})
  SELECT g.id{values:g}
  FROM ghosts AS g
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object('swept', true, 'heartbeat_at', clock_timestamp())
  WHERE id = :run_id
  RETURNING 1
)
SELECT (SELECT count(*) FROM repaired) AS repaired, (SELECT count(*) FROM progress) AS logged
"""

# A batch that one row makes fail (an app's CHECK, an app column NOT NULL without a default,
# an app trigger's exception) is done again by id, halved around the rows that cannot be
# written; each such row is named in the run's audit row (ghostsync.sync_failures comes
# with ghostsync_0004), and the run ends 'partial' while a ghost stays.
GHOST_IDS = r"""
SELECT u.id, (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL AS is_ghost
FROM auth.users AS u
WHERE CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid)
ORDER BY u.id
LIMIT :batch_size
"""

# Its ghosts locked FOR KEY SHARE as in BATCH, under the same row-lock bound (:lock_timeout).
REPAIR_SOME = r"""
INSERT INTO public.users (id{columns})
SELECT u.id{values:u}
FROM (SELECT a.* FROM auth.users AS a
      WHERE (SELECT pg_catalog.set_config('lock_timeout', CAST(:lock_timeout AS text), true)) IS NOT NULL
        AND a.id = ANY (CAST(:ghost_ids AS uuid[]))
        AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id)
      FOR KEY SHARE OF a) AS u
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

RECORD_FAILURE = r"""
UPDATE public.cleanup_audit_log
SET details = details || jsonb_build_object('unrepairable',
      coalesce(details -> 'unrepairable', '[]'::jsonb)
      || jsonb_build_array(jsonb_build_object('id', CAST(:ghost_id AS text), 'sqlstate', CAST(:failed_state AS text),
                                              'message', CAST(:failed_message AS text))))
WHERE id = (SELECT max(l.id) FROM public.cleanup_audit_log AS l
            WHERE l.job_name = 'backfill_ghost_users' AND l.status = 'running'
              AND l.details ->> 'pid' = pg_backend_pid()::text)
"""

PROGRESS = r"""
UPDATE public.cleanup_audit_log
SET records_affected = records_affected + CAST(:repaired AS int),
    details = details || jsonb_strip_nulls(jsonb_build_object(
      'batches', coalesce((details ->> 'batches')::int, 0) + 1,
      'last_id', CAST(:last_id AS text),
      'heartbeat_at', clock_timestamp()))
WHERE id = :run_id
"""

STATEMENTS = kit.BackfillStatements(
    mark_interrupted=MARK_INTERRUPTED, start=START, batch=BATCH, finish=FINISH,
    sweep=kit.JobSweep(horizon=HORIZON, writers=WRITERS, writers_open=WRITERS_OPEN, repair_recent=REPAIR_RECENT),
    row_by_row=kit.RowByRow(ghost_ids=GHOST_IDS, repair_some=REPAIR_SOME, record_failure=RECORD_FAILURE,
                            progress=PROGRESS),
)

# What the backfill writes: the columns of ghostsync_0002's sync that the table has
# (an adopted table other users can read may lack some), as UTC into a timestamp.
WRITES = (
    kit.Write("email", "{row}.email"),
    kit.Write("email_verified", "{row}.email_confirmed_at IS NOT NULL"),
    kit.Write("created_at", "coalesce({row}.created_at, now())"),
    kit.Write("updated_at", "coalesce({row}.updated_at, {row}.created_at, now())"),
)

# Offline the batches run inside the database, in the migration's transaction.
OFFLINE_TEMPLATE = r"""
DO $ghostsync$
DECLARE
  run_id bigint;
  -- "id > after_id" alone, so the plan PL/pgSQL caches keeps the index range
  -- scan; the nil uuid, which no walk step passes, is repaired first.
  after_id uuid := '00000000-0000-0000-0000-000000000000';
  last_id uuid;
  n_repaired bigint;
  total bigint := 0;
  n_batches int := 0;
BEGIN
  INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
  VALUES ('backfill_ghost_users', 'running', 0, clock_timestamp(),
          jsonb_build_object('mode', 'offline', 'pid', pg_backend_pid(), 'batches', 0))
  RETURNING id INTO run_id;
  INSERT INTO public.users (id{columns})
  SELECT u.id{values:u}
  FROM (SELECT * FROM auth.users AS a
        WHERE a.id = after_id AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = a.id)
        FOR KEY SHARE) AS u
  ON CONFLICT (id) DO NOTHING;
  GET DIAGNOSTICS total = ROW_COUNT;
  LOOP
    WITH batch AS (
      SELECT u.id
      FROM auth.users AS u
      WHERE u.id > after_id
      ORDER BY u.id
      LIMIT {batch_size}
    ),
    ghosts AS (
      SELECT u.id, u.email, u.email_confirmed_at, u.created_at, u.updated_at
      FROM auth.users AS u
      WHERE u.id IN (SELECT b.id FROM batch AS b WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL)
      FOR KEY SHARE OF u
    ),
    repaired AS (
      INSERT INTO public.users (id{columns})
      SELECT g.id{values:g}
      FROM ghosts AS g
      ON CONFLICT (id) DO NOTHING
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
                 default_dead_after=DEFAULT_DEAD_AFTER, writes=WRITES)


def downgrade() -> None:
    # The profiles the backfill created belong to real users: nothing to undo.
    pass
