"""Profiles carry deleted_at, so a soft-deleted account shows in its profile.

Revision ID: ghostsync_0005
Revises: ghostsync_0004
Create Date: 2026-11-24

The auth service's soft delete sets auth.users.deleted_at and obfuscates the
email; no DELETE happens. The sync of later revisions copies deleted_at into
public.users.deleted_at. Adding a nullable column without a default changes
the catalog only (no rewrite), under the lock budget. An existing column is
adopted only if it takes what the sync writes (a timestamp, NULL allowed).

Downgrade keeps the column and its values.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "ghostsync_0005"
down_revision = "ghostsync_0004"
branch_labels = None
depends_on = None

DELETED_AT = kit.Column("deleted_at", "{row}.deleted_at", "timestamptz", nullable=True)

DECLARES = kit.Declares()


def upgrade() -> None:
    # The column's values follow from the sync of ghostsync_0006 on (declared there);
    # profiles written before are brought up to date by ghostsync_0009.
    kit.step(kit.column_sql(DELETED_AT, revision, null_when="accounts that are not soft-deleted"),
             "add or adopt public.users.deleted_at", locks="1")


def downgrade() -> None:
    # The column holds data (when accounts were soft-deleted): kept.
    pass
