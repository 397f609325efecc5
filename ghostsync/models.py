"""SQLAlchemy Core models of the three tables ghostsync works with.

``auth_users`` describes only the columns of Supabase's ``auth.users`` that
ghostsync reads; the auth service owns that table. ``profiles`` is the app's
``public.users``, ``audit_log`` is ``public.cleanup_audit_log``,
``sync_failures`` is ``ghostsync.sync_failures`` and ``objects`` is
``ghostsync.objects``, in the shape the head revision leaves them. The
package's fixed-shape queries are built from these objects; what the sync
writes into a profile comes from the chain's declarations
(``ghostsync.sync``), since a follow-up revision may add columns; the
revisions keep their own frozen DDL text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Identity,
    MetaData,
    String,
    Table,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

metadata = MetaData()

auth_users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("email", String(255)),
    Column("phone", Text),
    Column("email_confirmed_at", TIMESTAMP(timezone=True)),
    Column("is_anonymous", Boolean, nullable=False),
    Column("is_sso_user", Boolean, nullable=False),
    Column("deleted_at", TIMESTAMP(timezone=True)),
    Column("created_at", TIMESTAMP(timezone=True)),
    Column("updated_at", TIMESTAMP(timezone=True)),
    schema="auth",
)

profiles = Table(
    "users",
    metadata,
    # No key to auth.users: since ghostsync_0011 the delete sync removes a profile after its
    # account is gone, and an adopted table keeps whatever key the app gave it.
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("email", Text),
    Column("email_verified", Boolean, nullable=False, server_default=false()),
    Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", TIMESTAMP(timezone=True)),
    schema="public",
    comment="One profile per auth.users row, kept by ghostsync.",
)

audit_log = Table(
    "cleanup_audit_log",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("job_name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("records_affected", BigInteger, nullable=False, server_default=text("0")),
    Column("started_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", TIMESTAMP(timezone=True)),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    schema="public",
    comment="One row per ghostsync job run.",
)

sync_failures = Table(
    "sync_failures",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("operation", Text, nullable=False),
    Column("sqlstate", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("first_failed_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Column("last_failed_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Column("failures", BigInteger, nullable=False, server_default=text("1")),
    schema="ghostsync",
    comment="Profile writes that failed; the auth write went through. Cleared by ghostsync repair.",
)

objects = Table(
    "objects",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("created", Boolean, nullable=False),
    Column("revision", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("recorded_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    schema="ghostsync",
    comment=("What ghostsync created (created) or adopted (not created); "
             "nothing else is ever replaced or dropped by it."),
)

GHOSTSYNC_TABLES = (profiles, audit_log, sync_failures, objects)
