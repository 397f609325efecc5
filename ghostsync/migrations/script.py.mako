<%
    def quoted(value):
        if value is None:
            return "None"
        if isinstance(value, (tuple, list)):
            items = ", ".join('"%s"' % v for v in value)
            return "(%s,)" % items if len(value) == 1 else "(%s)" % items
        return '"%s"' % value
%>"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Written by Alembic from ghostsync's template: an empty revision (a merge of
two heads of ghostsync's branch needs nothing more). For a follow-up that
changes what ghostsync installs, run `ghostsync revision -m MESSAGE` instead:
it writes the head's functions and triggers as the previous texts, the texts
to edit, the declaration, lock-safe upgrade() and downgrade(), and a test
(docs/FOLLOW-UP-REVISIONS.md). When both parents of a merge replaced the same
function or trigger, the merge must install the combined text and declare it.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = ${quoted(up_revision)}
down_revision = ${quoted(down_revision)}
branch_labels = ${quoted(branch_labels)}
depends_on = ${quoted(depends_on)}

DECLARES = kit.Declares()


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
