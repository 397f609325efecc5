"""How long a batched job's statement may wait for a row lock: bounded, then tried again.

The batched jobs (the backfill of ghostsync_0003 and ``ghostsync backfill``, the resync of
ghostsync_0009, ``repair``'s backfill step) lock accounts row by row (FOR KEY SHARE, FOR
SHARE) while they write profiles. On a connection in autocommit mode each batch used to be
a statement of its own, under the session's ``lock_timeout`` (none on Supabase's
``postgres``): one account held FOR UPDATE by another transaction (an auth request, an
admin's open session) stopped the job for as long as that transaction lived, and the rows
the batch had already locked made the auth service's writes to those accounts wait too.

``run`` gives such a statement a transaction of its own whose lock waits end after
``lock_timeout`` (``GHOSTSYNC_LOCK_TIMEOUT``, set with ``set_config(..., true)``, so it
holds for that transaction only, as through a transaction-mode pooler), and tries a batch
whose lock was busy again after a pause (``lock_backoff``, doubling up to 2s;
``lock_retries`` times). A lock still busy after the last try ends the job with SQLSTATE
55P03; the job resumes where it stopped when run again. On a connection already inside a
transaction (not autocommit) the statement runs as it is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable

from ghostsync import settings

LOCK_NOT_AVAILABLE = "55P03"
MAX_BACKOFF_S = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class RowLockBudget:
    timeout_ms: int
    retries: int
    backoff_s: float

    @classmethod
    def configured(cls) -> RowLockBudget:
        """From ``GHOSTSYNC_LOCK_TIMEOUT``, ``GHOSTSYNC_LOCK_RETRIES`` and ``GHOSTSYNC_LOCK_BACKOFF``."""
        return cls(timeout_ms=max(1, round(settings.resolve_duration("lock_timeout").total_seconds() * 1000)),
                   retries=settings.resolve_count("lock_retries"),
                   backoff_s=settings.resolve_duration("lock_backoff").total_seconds())

    def pause(self, attempt: int) -> float:
        return float(min(MAX_BACKOFF_S, self.backoff_s * (2**attempt)))


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)  # psycopg2, psycopg 3
    return str(code) if code else None


def _autocommit(conn: Connection) -> bool:
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))


def run(conn: Connection, statement: Executable, params: Mapping[str, Any], use: Callable[[CursorResult[Any]], T],
        budget: RowLockBudget | None = None) -> T:
    """Execute ``statement`` and return ``use(result)`` (read before the transaction ends)."""
    if not _autocommit(conn):
        return use(conn.execute(statement, params))
    budget = budget or RowLockBudget.configured()
    for attempt in range(budget.retries + 1):
        conn.exec_driver_sql("BEGIN")
        try:
            conn.exec_driver_sql(f"SELECT pg_catalog.set_config('lock_timeout', '{budget.timeout_ms}ms', true)")
            value = use(conn.execute(statement, params))
        except BaseException as exc:
            with contextlib.suppress(Exception):  # a lost connection: the original error says so
                conn.exec_driver_sql("ROLLBACK")
            if not isinstance(exc, DBAPIError) or _sqlstate(exc) != LOCK_NOT_AVAILABLE or attempt == budget.retries:
                raise
            time.sleep(budget.pause(attempt))
            continue
        conn.exec_driver_sql("COMMIT")
        return value
    raise AssertionError("unreachable")
