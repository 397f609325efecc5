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
and is closed to PUBLIC, anon and authenticated.

Downgrade keeps the schema and its rows: they are the record of what still
needs repair.
"""

from __future__ import annotations

from ghostsync.migrations.kit import execute_guarded

revision = "ghostsync_0004"
down_revision = "ghostsync_0003"
branch_labels = None
depends_on = None

CREATE_FAILURES = r"""
CREATE SCHEMA IF NOT EXISTS ghostsync;
COMMENT ON SCHEMA ghostsync IS 'ghostsync''s private objects; not for the Data API.';
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
REVOKE ALL ON SCHEMA ghostsync FROM PUBLIC;
REVOKE ALL ON TABLE ghostsync.sync_failures FROM PUBLIC;
DO $ghostsync$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON SCHEMA ghostsync FROM anon;
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON SCHEMA ghostsync FROM authenticated;
    REVOKE ALL ON TABLE ghostsync.sync_failures FROM authenticated;
  END IF;
END
$ghostsync$;
"""


def upgrade() -> None:
    execute_guarded(CREATE_FAILURES, "create ghostsync.sync_failures")


def downgrade() -> None:
    # The failure records are the list of what still needs repair: kept.
    pass
