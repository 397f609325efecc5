<%
    def quoted(value):
        return '"%s"' % value if isinstance(value, str) else repr(value)
%>"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

What this revision changes, why, and what its downgrade keeps.

Conventions of a ghostsync revision (docs/FOLLOW-UP-REVISIONS.md):
- the SQL lives in this file as text and never changes once released;
- every statement that locks auth.users or public.users goes through
  execute_guarded (lock_timeout per transaction, retried with backoff);
- a function is SECURITY DEFINER with SET search_path = '' and names every
  object schema-qualified; EXECUTE stays revoked from PUBLIC, anon and
  authenticated (CREATE OR REPLACE keeps the grants of the function it replaces);
- a trigger function never raises: a failed profile write is recorded in
  ghostsync.sync_failures, so the auth service's write goes through;
- when upgrade replaces a function or a trigger, downgrade restores the
  previous text exactly (copy it here from the revision that created it;
  never import it);
- no downgrade deletes a profile or an audit row;
- raw_user_meta_data is written by end users: copy it as display text only,
  never use it for authorization.
"""

from __future__ import annotations

from alembic import op
${imports if imports else ""}
from ghostsync.migrations.kit import execute_guarded

revision = ${quoted(up_revision)}
down_revision = ${quoted(down_revision)}
branch_labels = ${quoted(branch_labels)}
depends_on = ${quoted(depends_on)}

# Statements that lock auth.users or public.users (ALTER TABLE, CREATE or
# DROP TRIGGER ... ON auth.users): run them with execute_guarded.
UPGRADE_SQL = r"""
"""

# The previous text of everything UPGRADE_SQL replaces, verbatim, e.g.
# "ghostsync_0007's text, verbatim." above a copy of its CREATE statement.
DOWNGRADE_SQL = r"""
"""

# Read by ghostsync.chain (drift detection in `ghostsync status`): each function
# this revision creates or replaces, "schema.name(args)" -> its CREATE statement,
# and each trigger on auth.users it creates.
FUNCTIONS: dict[str, str] = {}
TRIGGERS: tuple[str, ...] = ()


def upgrade() -> None:
    ${upgrades if upgrades else 'execute_guarded(UPGRADE_SQL, "describe the step")'}


def downgrade() -> None:
    ${downgrades if downgrades else 'execute_guarded(DOWNGRADE_SQL, "describe the step")'}
