"""``ghostsync repair``: every profile equal to its account again, each step audited.

In order, each a job of its own in ``cleanup_audit_log``:

1. ``repair_failed_syncs``: each user recorded in ``ghostsync.sync_failures``
   gets its profile written from its account (locked FOR SHARE), or removed
   if the account is gone; the record is cleared when the write succeeds,
   and keeps the new error otherwise;
2. ``repair_stale_profiles``: profiles whose synced columns disagree with
   their accounts are rewritten, in keyset batches;
3. ``repair_orphans``: profiles whose account is gone are deleted, as the
   delete sync would have done; their ids are logged in the audit row;
4. ``backfill_ghost_users``: the batched backfill creates every missing profile.

What is synced comes from the declaration of the revision the database is
at. Running repair again changes nothing. Each step runs in short
transactions of its own; a step that fails is reported and the next still runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ghostsync import backfill, names, sync
from ghostsync.audit import finish_run, start_run
from ghostsync.chain import Declared
from ghostsync.errors import describe
from ghostsync.migrations import dberrors
from ghostsync.models import sync_failures

ORPHAN_IDS_LOGGED = 10_000


@dataclass
class StepResult:
    job: str
    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    run_id: int | None = None
    not_done: str | None = None  # why the step could not run at all


@dataclass
class RepairReport:
    failed_syncs: StepResult
    stale: StepResult
    orphans: StepResult
    ghosts: StepResult

    @property
    def complete(self) -> bool:
        steps = (self.failed_syncs, self.stale, self.orphans, self.ghosts)
        return all(s.failed == 0 and s.not_done is None for s in steps)


def _error(exc: DBAPIError) -> tuple[str, str]:
    return dberrors.sqlstate(exc) or "XX000", dberrors.primary_message(exc)


def repair_failed_syncs(conn: Connection, declared: Declared, *, limit: int | None = None) -> StepResult:
    """Retry every recorded failure (or the oldest ``limit``); ``conn`` has no transaction begun."""
    result = StepResult(names.REPAIR_JOB)
    result.run_id = start_run(conn, names.REPAIR_JOB, {"mode": "cli"})
    query = select(sync_failures.c.user_id, sync_failures.c.last_failed_at).order_by(sync_failures.c.last_failed_at)
    if limit is not None:
        query = query.limit(limit)
    with conn.begin():
        pending = conn.execute(query).all()
    write = text(sync.upsert_from_auth(declared, "ARRAY[CAST(:id AS uuid)]"))
    remove = text(sync.delete_orphans("ARRAY[CAST(:id AS uuid)]"))
    try:
        for user_id, failed_at in pending:
            try:
                with conn.begin():
                    if not conn.execute(write, {"id": str(user_id)}).first():
                        conn.execute(remove, {"id": str(user_id)})
                    # cleared only if no newer failure was recorded meanwhile
                    conn.execute(delete(sync_failures).where(sync_failures.c.user_id == user_id,
                                                             sync_failures.c.last_failed_at == failed_at))
                result.done += 1
            except DBAPIError as exc:
                result.failed += 1
                sqlstate, message = _error(exc)
                result.errors.append(f"{user_id}: {sqlstate} {message}")
                with conn.begin():
                    conn.execute(update(sync_failures).where(sync_failures.c.user_id == user_id)
                                 .values(sqlstate=sqlstate, message=f"repair failed: {message}"))
    except BaseException as exc:
        finish_run(conn, result.run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                   result.done, {"error": backfill._error_text(exc)}, quiet=True)
        raise
    finish_run(conn, result.run_id, "succeeded" if result.failed == 0 else "partial", result.done,
               {"still_failing": result.failed, "errors": result.errors[:20]})
    return result


def _batched(conn: Connection, job: str, find: str, act: str, batch_size: int,
             details: Callable[[list[str]], dict[str, Any]] | None = None) -> StepResult:
    """Find ids in keyset batches (``find``: ``:after``, ``:limit``), act on each batch (``act``:
    ``:ids`` as text[], returning the ids it changed) in a transaction of its own."""
    result = StepResult(job)
    result.run_id = start_run(conn, job, {"mode": "cli", "batch_size": batch_size})
    changed: list[str] = []
    after: str | None = None
    try:
        while True:
            with conn.begin():
                ids = [str(r[0]) for r in conn.execute(text(find), {"after": after, "limit": batch_size})]
                if not ids:
                    break
                done = [str(r[0]) for r in conn.execute(text(act), {"ids": ids})]
            result.done += len(done)
            changed += done
            after = ids[-1]
    except BaseException as exc:
        finish_run(conn, result.run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                   result.done, {"error": backfill._error_text(exc), **(details(changed) if details else {})},
                   quiet=True)
        raise
    finish_run(conn, result.run_id, "succeeded", result.done, details(changed) if details else {})
    return result


def fix_stale_profiles(conn: Connection, declared: Declared, batch_size: int) -> StepResult:
    """Rewrite every profile whose synced columns disagree with its account."""
    return _batched(conn, names.STALE_JOB, sync.stale_ids(declared),
                    sync.rewrite_from_auth(declared, "CAST(:ids AS uuid[])", only_stale=True), batch_size)


def remove_orphans(conn: Connection, batch_size: int) -> StepResult:
    """Delete every profile whose account is gone; the ids go into the audit row."""
    def logged(ids: list[str]) -> dict[str, Any]:
        return {"ids": ids[:ORPHAN_IDS_LOGGED], "ids_left_out": max(0, len(ids) - ORPHAN_IDS_LOGGED)}

    return _batched(conn, names.ORPHAN_JOB, sync.orphan_ids(), sync.delete_orphans("CAST(:ids AS uuid[])"),
                    batch_size, logged)


def backfill_ghosts(conn: Connection, declared: Declared, batch_size: int) -> StepResult:
    """The batched backfill on ``conn`` (autocommit)."""
    result = StepResult(names.BACKFILL_JOB)
    run = backfill.run_batched(conn, backfill.statements_for(declared), batch_size=batch_size, mode="repair")
    result.run_id, result.done, result.failed = run.run_id, run.repaired, run.unrepairable
    if run.unrepairable:
        result.errors.append(f"{run.unrepairable} ghost(s) could not be repaired (recorded in "
                             "ghostsync.sync_failures)")
    return result


def repair(engine: Engine, autocommit_engine: Engine, declared: Declared, *, batch_size: int,
           url: str | None = None) -> RepairReport:
    """All four steps; a step whose database work fails is reported and the next step still runs."""
    def guarded(job: str, run: Callable[[], StepResult]) -> StepResult:
        try:
            return run()
        except DBAPIError as exc:
            return StepResult(job, not_done=describe(exc, url))

    with engine.connect() as conn:
        failed = guarded(names.REPAIR_JOB, lambda: repair_failed_syncs(conn, declared))
        stale = guarded(names.STALE_JOB, lambda: fix_stale_profiles(conn, declared, batch_size))
        orphans = guarded(names.ORPHAN_JOB, lambda: remove_orphans(conn, batch_size))
    with autocommit_engine.connect() as conn:
        ghosts = guarded(names.BACKFILL_JOB, lambda: backfill_ghosts(conn, declared, batch_size))
    return RepairReport(failed, stale, orphans, ghosts)
