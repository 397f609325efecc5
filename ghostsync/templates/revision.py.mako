## A follow-up revision on top of ghostsync's branch head; rendered by ghostsync.generator.revision_source,
## with Mako, as Alembic renders script.py.mako. Every value is Python text the generator made already
## (literals, constant names); the template holds the revision's shape and its comments.
"""${title}

Revision ID: ${revision}
Revises: ${down_revision}
Create Date: ${create_date}

TODO: say what this revision changes, why, and what its downgrade restores and
keeps (docs/FOLLOW-UP-REVISIONS.md). Written by `ghostsync revision` from what
${down_revision} leaves in place.

- Functions: SECURITY DEFINER, SET search_path = '', every name
  schema-qualified; a trigger function never raises (a failed profile write
  is recorded in ghostsync.sync_failures, so the auth service's write goes
  through). kit.install_function keeps EXECUTE revoked from PUBLIC, anon and
  authenticated and records the function as ghostsync's.
- Lock safety: functions first (they lock no table), then ONE lock step, last:
  the triggers on auth.users, then the new columns of public.users. A busy
  table is retried under the lock budget with no lock held in between. A
  backfill never goes here: it is a revision of its own
  (`ghostsync revision --data-job NAME`), so it never shares a transaction
  with this DDL.
- raw_user_meta_data is written by end users: copy it as display text only,
  bounded in length, never for authorization.

Downgrade restores ${down_revision}'s function texts and trigger definitions exactly;
the columns this revision adds keep their values.
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = ${revision_literal}
down_revision = ${down_literal}
branch_labels = None
depends_on = None

# -- what ${down_revision} leaves in place, verbatim (chain.declared_at(${down_repr})) --
# downgrade() puts these back exactly. Never edit them, never import them from another revision.
# When this revision leaves a function or trigger unchanged, delete its PREVIOUS_ text, its new
# copy below, and its lines in DECLARES and downgrade().
% for by, literal in previous:

# declared by ${by}
${literal}
% endfor

# -- this revision's texts: edit these -------------------------------------------------------
# Copies of the texts above. A trigger's definition is exactly what pg_get_triggerdef prints for it
# under search_path '' (status compares the two; docs/FOLLOW-UP-REVISIONS.md shows how to get it).
# A new function or trigger goes here too, into DECLARES, and into downgrade() as a drop.
% for literal in current:

${literal}
% endfor

# New profile columns the sync writes, each derived from the auth row ({row}), e.g.
#   DISPLAY_NAME = kit.Column("display_name", "pg_catalog.left({row}.raw_user_meta_data ->> 'full_name', 100)",
#                             "text", nullable=True, max_length=100)
#   COLUMNS = (DISPLAY_NAME,)
# upgrade() adds each, or adopts an existing one only if it takes every value the sync writes
# (type, length, NULL), else stops with one line before changing anything. Fill existing
# profiles in a data revision of its own: `ghostsync revision --data-job backfill_<column>`.
COLUMNS: tuple[kit.Column, ...] = ()

# What ghostsync status, repair, backfill and the drift check read once the database is at this
# revision: the columns it syncs, and the functions and triggers it installs. Extend it with
# what you add; list in removes= what you drop.
DECLARES = kit.Declares(
    columns=COLUMNS,
    functions=(
% for name in function_constants:
        ${name},
% endfor
    ),
    triggers=(
% for name in trigger_constants:
        ${name},
% endfor
    ),
)


def upgrade() -> None:
    # Functions first: CREATE OR REPLACE FUNCTION locks no table the auth service or the app uses.
    for function in DECLARES.functions:
        kit.install_function(function, revision)
    # Then ONE lock step, last, so its locks are held only until this revision commits and a busy
    # table is retried with no lock held: the triggers on auth.users first, then the columns of
    # public.users (the order a signup locks them in, so no signup in flight waits on this step
    # while holding what it waits for).
    tables = {trigger.table for trigger in DECLARES.triggers} | ({"public.users"} if COLUMNS else set())
    if tables:
        kit.step(
            "\n".join([*(kit.trigger_sql(trigger, revision) for trigger in DECLARES.triggers),
                       *(kit.column_sql(column, revision) for column in COLUMNS)]),
            f"create the triggers and add the columns of {revision}",
            locks=str(len(tables)),
        )


def downgrade() -> None:
    # ${down_revision}'s texts, exactly, each recorded again under the revision that declared it:
    # functions first, then the triggers in ONE lock step. What this revision adds is dropped here
    # (kit.drop_triggers((name, ...), table, functions=(signature, ...))); its columns stay, with
    # their values: no downgrade deletes data.
% for constant, by in restore_functions:
    kit.install_function(PREVIOUS_${constant}, ${by})
% endfor
% if restore_triggers:
    kit.step("\n".join((
    % for constant, by in restore_triggers:
        kit.trigger_sql(PREVIOUS_${constant}, ${by}),
    % endfor
    )), ${restore_what}, locks=${restore_locks})
% elif not restore_functions:
    pass
% endif
