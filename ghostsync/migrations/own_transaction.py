"""Each ghostsync revision runs in a transaction of its own, or not at all.

A revision's lock budget bounds how long any request waits for the locks of one step, and
holds only if those locks are released when the revision commits. A host's env.py may run
every revision of ``alembic upgrade heads`` in one transaction (Alembic's stock env.py: no
``transaction_per_migration``), or inside a transaction of its own (``engine.begin()``); then
the locks of one revision stay held through the next ones, and every signup waits on them
(issue 19: 41.6 s behind a 400 ms budget), and the commit of a data job
(``autocommit_block``) would commit the host's earlier revisions mid-run. ``refuse_shared()``
is called by the kit before every operation it runs, so it comes before the first statement
of a revision, and ends the command with one line when:

- the env.py configured no transaction per migration (online, and offline, where all
  revisions would sit between one BEGIN and COMMIT: the same stall under psql); or
- online, the transaction the revision runs in already wrote a row of Alembic's version table:
  an earlier revision of this run shares it (an outer transaction of the env.py). The version
  row of a revision is written after its last statement, so during a revision only an earlier
  revision's row can carry this transaction's id; the version table Alembic creates at the
  start of a run has no row yet, so the first revision of a run is not taken for a shared one.

Uses only public Alembic API (``MigrationContext.opts``, ``impl``, ``version_table``,
``version_table_schema``). A revision that is the first of a run inside an outer transaction
cannot be told apart from one in its own; the next ghostsync revision in that transaction is
refused, and the outer transaction rolls back with it. Where that first revision is a data job,
``autocommit_block()`` refuses instead of committing the outer transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError

SETTING = "transaction_per_migration=True"

ONE_TRANSACTION = (
    "ghostsync: env.py runs all revisions of this command in one transaction, so the locks of one would "
    "stay held through the next ones and keep signups waiting: pass " + SETTING + " to context.configure() "
    "in env.py (online and offline); nothing was applied"
)

OUTER_TRANSACTION = (
    "ghostsync: env.py runs the revisions inside a transaction of its own, so the locks of one would stay held "
    "through the next ones and keep signups waiting: give context.configure() a connection that is not in a "
    "transaction (engine.connect(), not engine.begin()) and pass " + SETTING + "; nothing was applied"
)

# The statements below carry no parameters: no driver may read a % in a name as a marker.
RAW = {"no_parameters": True}

EXISTS = "SELECT pg_catalog.to_regclass({literal}) IS NOT NULL"

# Whether a row of the version table was written by the current transaction (xmin is the
# 32-bit transaction id, the current one carries its epoch above).
WROTE_VERSION_ROW = ("SELECT EXISTS (SELECT 1 FROM {table} WHERE xmin::text::bigint = "
                     "pg_catalog.mod(pg_catalog.pg_current_xact_id_if_assigned()::text::bigint, 4294967296))")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def version_table(migration: MigrationContext) -> str:
    """The version table as the command names it, quoted (schema-qualified when configured)."""
    table = _quoted(migration.version_table)
    schema = migration.version_table_schema
    return f"{_quoted(schema)}.{table}" if schema else table


def shares_one_transaction(migration: MigrationContext) -> bool:
    """Whether the env.py runs all revisions of the command in one transaction (PostgreSQL's DDL is
    transactional, so without transaction_per_migration Alembic opens one for the whole run)."""
    return bool(migration.impl.transactional_ddl) and not migration.opts.get("transaction_per_migration", False)


def refuse_shared(migration: MigrationContext) -> None:
    """End the command with one line if this revision would share its transaction (see the module)."""
    if shares_one_transaction(migration):
        raise CommandError(ONE_TRANSACTION)
    if migration.as_sql or migration.connection is None:
        return
    table = version_table(migration)
    conn = migration.connection
    literal = "'" + table.replace("'", "''") + "'"
    if not conn.exec_driver_sql(EXISTS.format(literal=literal), execution_options=RAW).scalar():
        return
    if conn.exec_driver_sql(WROTE_VERSION_ROW.format(table=table), execution_options=RAW).scalar():
        raise CommandError(OUTER_TRANSACTION)


@contextmanager
def autocommit_block(migration: MigrationContext) -> Iterator[None]:
    """Alembic's ``autocommit_block``: commits the transaction Alembic began for this revision (after
    ``refuse_shared``, the revision's own), then runs the block in autocommit.

    On a connection the env.py handed over inside a transaction of its own, Alembic began none and
    fails on entering (an assertion, or with ``python -O`` the commit of nothing) before committing
    anything: that is the outer transaction, said in one line.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(migration.autocommit_block())
        except (AssertionError, AttributeError):
            raise CommandError(OUTER_TRANSACTION) from None
        yield
