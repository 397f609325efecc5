"""cleanup_audit_log rows for the jobs the command line runs (repair, backfill dry runs).

The backfill keeps its own statements (``ghostsync.backfill``), since it must
record progress in the same statement as each batch.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, literal, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from ghostsync.models import audit_log


def start_run(conn: Connection, job_name: str, details: dict[str, Any]) -> int:
    """Insert a ``running`` row and commit it; return its id."""
    with conn.begin():
        run_id = conn.execute(
            insert(audit_log)
            .values(job_name=job_name, status="running", records_affected=0,
                    started_at=func.clock_timestamp(), details=details)
            .returning(audit_log.c.id)
        ).scalar_one()
    return int(run_id)


def finish_run(
    conn: Connection,
    run_id: int,
    status: str,
    records: int,
    details: dict[str, Any],
    *,
    quiet: bool = False,
) -> None:
    """Close the run; with ``quiet``, a broken connection is ignored (the next run marks it)."""
    try:
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            conn.execute(
                update(audit_log)
                .where(audit_log.c.id == run_id)
                .values(status=status, records_affected=records, finished_at=func.clock_timestamp(),
                        details=audit_log.c.details.op("||")(literal(details, JSONB)))
            )
    except Exception:
        if not quiet:
            raise
