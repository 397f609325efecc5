"""The batched ghost repair: keyset batches over auth.users, each its own transaction.

One run is one row in ``cleanup_audit_log``. The runner is the mechanism only;
the statements come from the caller in a ``BackfillStatements``: the backfill
revision passes its own frozen text, so changing this module never changes
what that revision writes.

Contract of a run:
- rows still marked ``running`` by a run whose backend is gone are marked
  ``interrupted`` first (a crash or SIGKILL leaves exactly such a row);
- each batch is one statement in autocommit: it repairs the ghosts among the
  next ``batch_size`` auth users by id and records progress in the run's
  audit row, atomically; a crash loses at most the batch in flight;
- a second run repairs what is left and never duplicates (ON CONFLICT);
- Ctrl-C ends the run as ``interrupted``; any error ends it as ``failed`` with
  the error in ``details``, then propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

JOB_NAME = "backfill_ghost_users"


@dataclass(frozen=True)
class BackfillStatements:
    """SQL text of one backfill run; bind parameters are named ``:name``.

    - ``mark_interrupted`` (``:job_name``): close the rows of dead runs.
    - ``start`` (``:job_name``, ``:mode``): insert the ``running`` row, return its id.
    - ``batch`` (``:run_id``, ``:after``, ``:batch_size``): repair one batch and
      return ``last_id``, ``repaired``, ``scanned`` (``last_id`` NULL when done).
    - ``finish`` (``:run_id``, ``:status``, ``:error``): close the run.
    """

    mark_interrupted: str
    start: str
    batch: str
    finish: str


@dataclass
class BackfillResult:
    run_id: int
    status: str = "running"
    repaired: int = 0
    scanned: int = 0
    batches: int = 0
    longest_batch_s: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)


ProgressCallback = Callable[[BackfillResult], None]


def run_batched(
    conn: Connection,
    statements: BackfillStatements,
    *,
    batch_size: int,
    mode: str = "online",
    job_name: str = JOB_NAME,
    on_batch: ProgressCallback | None = None,
    max_batches: int | None = None,
) -> BackfillResult:
    """Run the backfill on ``conn``, which must be in autocommit mode.

    ``max_batches`` stops early (status ``interrupted``); tests use it to
    simulate a run cut short.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    conn.execute(text(statements.mark_interrupted), {"job_name": job_name})
    run_id = int(conn.execute(text(statements.start), {"job_name": job_name, "mode": mode}).scalar_one())
    result = BackfillResult(run_id=run_id)
    after: Any = None
    try:
        while True:
            if max_batches is not None and result.batches >= max_batches:
                _finish(conn, statements, result, "interrupted", "stopped after max_batches")
                return result
            began = time.perf_counter()
            row = conn.execute(
                text(statements.batch),
                {"run_id": run_id, "after": after, "batch_size": batch_size},
            ).one()
            elapsed = time.perf_counter() - began
            if row.last_id is None:
                break
            after = row.last_id
            result.batches += 1
            result.repaired += int(row.repaired)
            result.scanned += int(row.scanned)
            result.batch_seconds.append(elapsed)
            result.longest_batch_s = max(result.longest_batch_s, elapsed)
            if on_batch is not None:
                on_batch(result)
    except KeyboardInterrupt:
        _finish_quietly(conn, statements, result, "interrupted", "interrupted by the operator")
        raise
    except Exception as exc:
        _finish_quietly(conn, statements, result, "failed", f"{type(exc).__name__}: {exc}".strip())
        raise
    _finish(conn, statements, result, "succeeded", None)
    return result


def _finish(
    conn: Connection, statements: BackfillStatements, result: BackfillResult, status: str, error: str | None
) -> None:
    conn.execute(text(statements.finish), {"run_id": result.run_id, "status": status, "error": error})
    result.status = status


def _finish_quietly(
    conn: Connection, statements: BackfillStatements, result: BackfillResult, status: str, error: str
) -> None:
    """Record the end of a broken run if the connection still works; the next run marks it otherwise."""
    try:
        _finish(conn, statements, result, status, error[:2000])
    except Exception:  # noqa: BLE001 - the original error is the one to report
        result.status = status
