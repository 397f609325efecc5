"""How long the runtime's batches (``ghostsync backfill``'s walk, ``repair``) wait for a row lock.

Their batches lock accounts (FOR KEY SHARE, FOR SHARE) while they write profiles, so one
account held FOR UPDATE by another transaction (an auth request, an admin's open session)
would stop the run for as long as that transaction lived, and the accounts the batch had
already locked would keep the auth service's writes to them waiting as long.

``run`` sends such a batch as one simple query of two statements, ``set_config('lock_timeout',
..., true)`` then the batch: the server runs them as one implicit transaction, so the limit
holds for that batch only (as through a transaction-mode pooler) and no transaction is ever
left open between round trips (a stopped client holds no lock). A batch whose lock was busy
is tried again after a pause; a lock still busy after the last try ends the run with SQLSTATE
55P03, and the run resumes where it stopped. The budget (``RowLockBudget``) is the one the
revisions' jobs use (``ghostsync.migrations.jobs``, whose batches set the bound inside their
own statement, for every driver).

One round trip with two statements needs a driver that sends bound parameters inside the
query text: psycopg2, which ghostsync's commands use. A ``text()`` statement is sent as its
text; on other drivers, and for other SQLAlchemy constructs, the statement runs as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable, TextClause

from ghostsync.migrations.dberrors import sqlstate
from ghostsync.migrations.jobs import LOCK_NOT_AVAILABLE, PRELUDE, RowLockBudget

__all__ = ["PRELUDE", "RowLockBudget", "run"]


T = TypeVar("T")


def run(conn: Connection, sql: str | Executable, params: Mapping[str, Any],
        use: Callable[[CursorResult[Any]], T], budget: RowLockBudget | None = None) -> T:
    """Execute ``sql`` with ``params`` and return ``use(result)``, its row-lock waits bounded where it can be."""
    if isinstance(sql, TextClause):
        sql = sql.text  # the runtime's own batches are text() with plain :name parameters
    if not isinstance(sql, str) or conn.dialect.driver != "psycopg2":
        return use(conn.execute(text(sql) if isinstance(sql, str) else sql, params))
    budget = budget or RowLockBudget.configured()
    bounded = text(PRELUDE.format(timeout_ms=budget.timeout_ms) + sql)
    for attempt in range(budget.retries + 1):
        try:
            return use(conn.execute(bounded, params))
        except DBAPIError as exc:
            if sqlstate(exc) != LOCK_NOT_AVAILABLE or attempt == budget.retries:
                raise
        time.sleep(budget.pause(attempt))
    raise AssertionError("unreachable")
