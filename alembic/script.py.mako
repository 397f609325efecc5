"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Conventions of a ghostsync revision (docs/FOLLOW-UP-REVISIONS.md):
- the SQL lives in this file as text and never changes once released;
- every statement that locks auth.users or public.users goes through
  execute_guarded (lock_timeout per transaction, retried with backoff);
- when upgrade replaces a function, downgrade restores the previous
  revision's text exactly (copy it here; do not import it);
- no downgrade deletes a profile or an audit row.
"""

from __future__ import annotations

from alembic import op
${imports if imports else ""}
from ghostsync.locking import execute_guarded

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

UPGRADE_SQL = r"""
"""

DOWNGRADE_SQL = r"""
"""


def upgrade() -> None:
    ${upgrades if upgrades else 'execute_guarded(UPGRADE_SQL, "describe the step")'}


def downgrade() -> None:
    ${downgrades if downgrades else 'execute_guarded(DOWNGRADE_SQL, "describe the step")'}
