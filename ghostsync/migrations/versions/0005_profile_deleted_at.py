"""Profiles carry deleted_at, so a soft-deleted account shows in its profile.

Revision ID: ghostsync_0005
Revises: ghostsync_0004
Create Date: 2026-11-24

The auth service's soft delete sets auth.users.deleted_at and obfuscates the
email; no DELETE happens. The sync of later revisions copies deleted_at into
public.users.deleted_at. Adding a nullable column without a default changes
the catalog only (no rewrite), under a short lock_timeout.

Downgrade keeps the column and its values.
"""

from __future__ import annotations

from ghostsync.migrations.kit import execute_guarded
from ghostsync.migrations.kit import raise_ghostsync_errors

revision = "ghostsync_0005"
down_revision = "ghostsync_0004"
branch_labels = None
depends_on = None

ADD_DELETED_AT = r"""
DO $ghostsync$
DECLARE
  found_type text;
BEGIN
  SELECT format_type(a.atttypid, NULL) INTO found_type
  FROM pg_attribute a
  WHERE a.attrelid = 'public.users'::regclass AND a.attname = 'deleted_at'
    AND a.attnum > 0 AND NOT a.attisdropped;
  IF found_type IS NULL THEN
    ALTER TABLE public.users ADD COLUMN deleted_at timestamptz;
  ELSIF found_type NOT IN ('timestamp with time zone', 'timestamp without time zone') THEN
    RAISE EXCEPTION 'ghostsync: public.users.deleted_at is %, needs timestamptz', found_type;
  END IF;
END
$ghostsync$;
"""


def upgrade() -> None:
    with raise_ghostsync_errors():
        execute_guarded(ADD_DELETED_AT, "add public.users.deleted_at")


def downgrade() -> None:
    # The column holds data (when accounts were soft-deleted): kept.
    pass
