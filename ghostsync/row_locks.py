"""How long a revision's batched job may wait for a row lock: bounded, then tried again.

The jobs of the backfill (ghostsync_0003) and resync (ghostsync_0009) revisions run their
frozen batch statements on a connection in autocommit mode, each batch a statement of its
own, under the session's ``lock_timeout`` (none on Supabase's ``postgres``). Their batches
lock accounts (FOR KEY SHARE, FOR SHARE) while they write profiles, so one account held
FOR UPDATE by another transaction (an auth request, an admin's open session) stopped the
upgrade for as long as that transaction lived, and the accounts the batch had already
locked kept the auth service's writes to them waiting as long.

``run`` sends such a batch as one simple query of two statements, ``set_config('lock_timeout',
..., true)`` then the batch: the server runs them as one implicit transaction, so the limit
holds for that batch only (as through a transaction-mode pooler) and no transaction is ever
left open between round trips (a stopped client holds no lock). A batch whose lock was busy
is tried again after a pause (``lock_backoff``, doubling up to 2s; ``lock_retries`` times);
a lock still busy after the last try ends the job with SQLSTATE 55P03, and the job resumes
where it stopped when the upgrade runs again.

One round trip with two statements needs a driver that sends bound parameters inside the
query text: psycopg2, which ``ghostsync migrate``, ``alembic`` in this repository and
ghostsync's commands use. A ``text()`` statement (the runtime's walk and
repair batches) is sent as its text; on other drivers, and for other SQLAlchemy constructs,
the statement runs as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable, TextClause

from ghostsync import settings
from ghostsync.migrations.dberrors import sqlstate

LOCK_NOT_AVAILABLE = "55P03"
MAX_BACKOFF_S = 2.0
PRELUDE = "SELECT pg_catalog.set_config('lock_timeout', '{timeout_ms}ms', true);\n"

T = TypeVar("T")


@dataclass(frozen=True)
class RowLockBudget:
    timeout_ms: int
    retries: int
    backoff_s: float

    @classmethod
    def configured(cls, x: Mapping[str, str] | None = None) -> RowLockBudget:
        """From ``x`` (a revision's ``-x lock_timeout`` / ``lock_retries`` / ``lock_backoff``), else
        ``GHOSTSYNC_LOCK_TIMEOUT``, ``GHOSTSYNC_LOCK_RETRIES`` and ``GHOSTSYNC_LOCK_BACKOFF``."""
        given = x or {}
        return cls(timeout_ms=max(1, round(settings.resolve_duration("lock_timeout", given).total_seconds() * 1000)),
                   retries=settings.resolve_count("lock_retries", given),
                   backoff_s=settings.resolve_duration("lock_backoff", given).total_seconds())

    def pause(self, attempt: int) -> float:
        return float(min(MAX_BACKOFF_S, self.backoff_s * (2**attempt)))


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
