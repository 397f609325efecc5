"""The names of ghostsync's own things, each in one place.

What a revision installs (functions, triggers, the profile's synced columns)
is declared in the revision itself and read through ``ghostsync.chain``;
the names here are those the package's commands use on their own.
"""

from __future__ import annotations

# where Alembic keeps its version table unless an env.py names another
VERSION_TABLE = "public.alembic_version"

# the app's profile table and the jobs' audit log, as status and verify-sql name them
PROFILES = "public.users"
AUDIT_LOG = "public.cleanup_audit_log"

# cleanup_audit_log.job_name of the runs the command line starts
BACKFILL_JOB = "backfill_ghost_users"
REPAIR_JOB = "repair_failed_syncs"
STALE_JOB = "repair_stale_profiles"
ORPHAN_JOB = "repair_orphans"

# application_name of each command's connections (visible in pg_stat_activity)
APPLICATION = {
    "migrate": "ghostsync-migrate",
    "status": "ghostsync-status",
    "backfill": "ghostsync-backfill",
    "repair": "ghostsync-repair",
}
