"""Sync failures: a private table where every failed profile write is recorded.

Revision ID: ghostsync_0004
Revises: ghostsync_0003
Create Date: 2026-11-24

The sync functions of later revisions never let a failed profile write fail
the auth service's write; they record it here instead: one row per user (the
latest failure, with a count), holding the operation (INSERT, UPDATE,
DELETE), the SQLSTATE and the message. `ghostsync status` reports these rows;
`ghostsync repair` retries them and clears each one it fixes.

The table lives in the schema `ghostsync`, which the Data API does not expose,
and is closed to PUBLIC, anon and authenticated. The message holds the
error's SQLSTATE and primary message only, never its DETAIL (which can hold
row data such as an email).

Downgrade keeps the schema and its rows: they are the record of what still
needs repair.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0004"
down_revision = "ghostsync_0003"
branch_labels = None
depends_on = None

CREATE_FAILURES = r"""
DO $ghostsync$
DECLARE
  table_created boolean := to_regclass('ghostsync.sync_failures') IS NULL;
BEGIN
  CREATE TABLE IF NOT EXISTS ghostsync.sync_failures (
    user_id uuid PRIMARY KEY,
    operation text NOT NULL,
    sqlstate text NOT NULL,
    message text NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    failures bigint NOT NULL DEFAULT 1
  );
  COMMENT ON TABLE ghostsync.sync_failures IS
    'Profile writes that failed; the auth write went through. Cleared by ghostsync repair.';
  REVOKE ALL ON TABLE ghostsync.sync_failures FROM PUBLIC;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM authenticated;
  END IF;
  INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
  VALUES ('table', 'ghostsync.sync_failures', table_created, 'ghostsync_0004', current_user)
  ON CONFLICT (kind, name) DO NOTHING;
END
$ghostsync$;
"""

DECLARES = kit.Declares()


def upgrade() -> None:
    kit.step(CREATE_FAILURES, "create ghostsync.sync_failures")


def downgrade() -> None:
    # The failure records are the list of what still needs repair: kept.
    pass
