"""The runner of a revision's data job (ghostsync_0003's backfill, ghostsync_0009's resync).

Part of frozen history: the kit's ``backfill`` runs a revision's job through this module only,
so what a job sends online (its statements, their parameters, their order, the retries) is
pinned with the revision's golden SQL (tests/data/golden/online). The runtime's own backfill
(``ghostsync.backfill``) may reuse what is here; nothing here imports the runtime.

Contract of a run (the statements are the revision's, in a ``BackfillStatements``):

- ``mark_interrupted`` first: rows still ``running`` whose run is dead become ``interrupted``;
- ``start`` inserts the run's ``running`` row;
- ``batch`` repeats, each one statement in autocommit (its own short transaction), until it
  returns a NULL ``last_id``. The batch bounds its own row-lock waits: it receives
  ``:lock_timeout`` (``500ms``) and sets it locally inside the statement, so the bound holds
  on every driver (psycopg 3 reads only the first result of a multi-statement query, asyncpg
  sends one statement at a time). A batch whose lock stayed busy (55P03) is tried again after
  a pause (``lock_backoff`` doubling up to 2s, ``lock_retries`` times), then the run fails with
  55P03 (the kit ends the command with one line; what was written stays, and the next run
  walks again, finding nothing left to do there); a batch that met an account
  deleted under it (23503) is repeated;
- with a ``sweep`` (``JobSweep``), the run ends by checking what the walk could not see;
- ``finish`` closes the row: ``succeeded``, ``interrupted`` (Ctrl-C, ``max_batches``, or a
  writer of auth.users still open when the sweep could wait no longer) or ``failed`` (the
  error's SQLSTATE and primary message, never its DETAIL), and the error propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ghostsync.migrations import dberrors, settings

LOCK_NOT_AVAILABLE = "55P03"
FOREIGN_KEY_VIOLATION = "23503"
BATCH_ATTEMPTS = 3
MAX_BACKOFF_S = 2.0
# How often a sweep asks whether the writers it waits for are gone.
WRITERS_POLL_S = 0.05


@dataclass(frozen=True)
class RowLockBudget:
    """How long a batch may wait for a row lock (``lock_timeout``), and how often it is tried again.

    From ``-x lock_timeout`` / ``lock_retries`` / ``lock_backoff``, else ``GHOSTSYNC_LOCK_TIMEOUT``,
    ``GHOSTSYNC_LOCK_RETRIES``, ``GHOSTSYNC_LOCK_BACKOFF``, else their defaults."""

    timeout_ms: int
    retries: int
    backoff_s: float

    @classmethod
    def configured(cls, x: Mapping[str, str] | None = None) -> RowLockBudget:
        given = x or {}
        return cls(timeout_ms=max(1, round(settings.resolve_duration("lock_timeout", given).total_seconds() * 1000)),
                   retries=settings.resolve_count("lock_retries", given),
                   backoff_s=settings.resolve_duration("lock_backoff", given).total_seconds())

    @property
    def lock_timeout(self) -> str:
        """The value a batch sets as its ``lock_timeout`` (``:lock_timeout``)."""
        return f"{self.timeout_ms}ms"

    def pause(self, attempt: int) -> float:
        return float(min(MAX_BACKOFF_S, self.backoff_s * (2**attempt)))


@dataclass(frozen=True)
class JobSweep:
    """How a job vouches for what its walk could not see (optional; all statements text).

    - ``horizon``: one row, ``horizon``: the oldest transaction still running (a 32-bit xid as
      text), read before the first batch: every row version written after it is the sweep's;
    - ``writers``: one row, ``writers``: the virtual transaction ids (text[]) of the other
      transactions that hold a write lock on auth.users now, i.e. may still commit accounts;
    - ``writers_open`` (``:writers``): one row, ``open``: how many of those are still running;
    - ``repair_recent`` (``:run_id``, ``:horizon``, ``:lock_timeout``): one statement that repairs
      the accounts among the row versions written since the horizon, logs it in the run's audit
      row and returns ``repaired``.

    After the walk the runner reads ``writers``, waits (polling, at most ``writers_wait``) until they
    have ended, then runs ``repair_recent``: a transaction open at the horizon (a replica-mode
    import, whose inserts fire no trigger) that commits during the walk, or while the sweep
    waits, is seen; a writer still open after the wait ends the run ``interrupted`` with the
    reason, never ``succeeded``.
    """

    horizon: str
    writers: str
    writers_open: str
    repair_recent: str


@dataclass(frozen=True)
class BackfillStatements:
    """A revision's job, as SQL text; bind parameters are named ``:name``.

    - ``mark_interrupted`` (``:job``, ``:dead_after`` seconds): close the rows of dead runs;
    - ``start`` (``:job``, ``:run_mode``): insert the ``running`` row, return its id;
    - ``batch`` (``:run_id``, ``:after``, ``:batch_size``, ``:lock_timeout``): one batch; returns
      ``last_id``, ``repaired``, ``scanned`` (``last_id`` NULL when done);
    - ``finish`` (``:run_id``, ``:run_status``, ``:run_error``): close the run;
    - ``sweep``: see ``JobSweep`` (None: the walk alone).
    """

    mark_interrupted: str
    start: str
    batch: str
    finish: str
    sweep: JobSweep | None = None


@dataclass
class JobResult:
    run_id: int
    status: str = "running"
    repaired: int = 0
    scanned: int = 0
    batches: int = 0
    longest_batch_s: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    reason: str | None = None


ProgressCallback = Callable[[JobResult], None]


class Interrupted(Exception):
    """The run stopped before it could vouch for everything; the message is its reason."""


def run(
    conn: Connection,
    statements: BackfillStatements,
    *,
    batch_size: int,
    job_name: str,
    dead_after_s: float,
    budget: RowLockBudget,
    writers_wait_s: float = 60.0,
    mode: str = "online",
    on_batch: ProgressCallback | None = None,
) -> JobResult:
    """Run a revision's job on ``conn``, which must be in autocommit mode (see the module's contract)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    conn.execute(text(statements.mark_interrupted), {"job": job_name, "dead_after": dead_after_s})
    run_id = int(conn.execute(text(statements.start), {"job": job_name, "run_mode": mode}).scalar_one())
    result = JobResult(run_id=run_id)
    try:
        horizon = conn.execute(text(statements.sweep.horizon)).scalar_one() if statements.sweep else None
        after = None
        while True:
            began = time.perf_counter()
            row = with_retries(conn, statements.batch, {"run_id": run_id, "after": after, "batch_size": batch_size},
                               budget, lambda r: r.one())
            if row.last_id is None:
                break
            after = row.last_id
            _count(result, began, int(row.repaired), int(row.scanned), on_batch)
        if statements.sweep is not None:
            wait_for_writers(conn, statements.sweep.writers, statements.sweep.writers_open, writers_wait_s)
            repaired = with_retries(conn, statements.sweep.repair_recent, {"run_id": run_id, "horizon": horizon},
                                    budget, lambda r: r.scalar_one())
            result.repaired += int(repaired)
    except Interrupted as stop:
        finish(conn, statements.finish, result, "interrupted", str(stop))
        return result
    except KeyboardInterrupt:
        finish_quietly(conn, statements.finish, result, "interrupted", "interrupted by the operator")
        raise
    except Exception as exc:
        finish_quietly(conn, statements.finish, result, "failed", error_text(exc))
        raise
    finish(conn, statements.finish, result, "succeeded", None)
    return result


def wait_for_writers(conn: Connection, writers_sql: str, writers_open_sql: str, wait_s: float) -> None:
    """Wait until the transactions that ``writers_sql`` names (those writing auth.users now) have
    ended, polling, at most ``wait_s``; raises ``Interrupted`` with the reason when one is still open."""
    writers = list(conn.execute(text(writers_sql)).scalar_one() or ())
    deadline = time.monotonic() + wait_s
    while writers:
        still = int(conn.execute(text(writers_open_sql), {"writers": writers}).scalar_one())
        if not still:
            return
        if time.monotonic() >= deadline:
            raise Interrupted(
                f"{still} transaction(s) writing auth.users were still open after {wait_s:g} s: the accounts they "
                "write cannot be vouched for; run it again once they have ended")
        time.sleep(WRITERS_POLL_S)


def with_retries(conn: Connection, sql: str, params: Mapping[str, Any], budget: RowLockBudget,
                 use: Callable[[Any], Any]) -> Any:
    """``use(result)`` of one statement, ``:lock_timeout`` passed to it: repeated after a pause while
    a row lock stays busy (55P03), and at once when an account it read was deleted under it (23503)."""
    statement = text(sql)
    bounded = {**params, "lock_timeout": budget.lock_timeout}
    busy = deleted = 0
    while True:
        try:
            return use(conn.execute(statement, bounded))
        except DBAPIError as exc:
            code = dberrors.sqlstate(exc)
            if code == LOCK_NOT_AVAILABLE and busy < budget.retries:
                time.sleep(budget.pause(busy))
                busy += 1
            elif code == FOREIGN_KEY_VIOLATION and deleted < BATCH_ATTEMPTS - 1:
                deleted += 1
            else:
                raise


def _count(result: JobResult, began: float, repaired: int, scanned: int, on_batch: ProgressCallback | None) -> None:
    elapsed = time.perf_counter() - began
    result.batches += 1
    result.repaired += repaired
    result.scanned += scanned
    result.batch_seconds.append(elapsed)
    result.longest_batch_s = max(result.longest_batch_s, elapsed)
    if on_batch is not None:
        on_batch(result)


def error_text(exc: BaseException) -> str:
    """What an audit row keeps of an error: its SQLSTATE and primary message, never its DETAIL
    or the statement (which can hold row data such as an email)."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return f"{dberrors.sqlstate(orig) or ''} {dberrors.primary_message(orig)}".strip()
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}".strip()


def finish(conn: Connection, sql: str, result: JobResult, status: str, error: str | None) -> None:
    conn.execute(text(sql), {"run_id": result.run_id, "run_status": status, "run_error": error})
    result.status = status
    result.reason = error


def finish_quietly(conn: Connection, sql: str, result: JobResult, status: str, error: str) -> None:
    """Record the end of a broken run if the connection still works; the next run marks it otherwise."""
    try:
        finish(conn, sql, result, status, error[:2000])
    except Exception:
        result.status = status
        result.reason = error


ESTIMATED_AUTH_USERS = (
    "SELECT CASE WHEN c.reltuples < 0 OR (c.reltuples = 0 AND c.relpages > 0)\n"
    "            THEN (SELECT count(*) FROM auth.users) ELSE c.reltuples::bigint END\n"
    "FROM pg_catalog.pg_class AS c WHERE c.oid = 'auth.users'::pg_catalog.regclass"
)


def estimated_auth_users(conn: Connection) -> int:
    """The planner's row estimate for auth.users (free; exact enough for a progress line); a table
    never analyzed has none (-1, or 0 with pages): then it is counted."""
    return int(conn.execute(text(ESTIMATED_AUTH_USERS)).scalar_one())
