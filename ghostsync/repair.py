"""``ghostsync repair``: every profile equal to its account again, each step audited.

In order, each a job of its own in ``cleanup_audit_log``:

1. ``repair_failed_syncs``: each user recorded in ``ghostsync.sync_failures``
   gets its profile written from its account (locked FOR SHARE), or removed
   if the account is gone; the record is cleared when the write succeeds,
   and keeps the new error otherwise;
2. ``repair_stale_profiles``: profiles whose synced columns disagree with
   their accounts are rewritten, in keyset batches;
3. ``repair_orphans``: profiles whose account is gone are deleted, as the
   delete sync would have done; their ids are logged in the audit row; on
   an adopted table without a key on id those rows are the app's and stay
   (``ghostsync.delete_rules``);
4. ``backfill_ghost_users``: the batched backfill creates every missing profile.

What is synced comes from the declaration of the revision the database is
at. Running repair again changes nothing. Each step runs in short
transactions of its own; a step that fails is reported and the next still runs.

A row that cannot be written does not hold back the others: a batch that
fails on a row (a CHECK or other constraint of the app's, a trigger's
exception) or on a row lock is halved until the row is alone, and that row is
named with its SQLSTATE and message (``StepResult.errors``, the audit row's
``errors``); the step ends ``partial``. Every transaction of the first three
steps waits at most ``lock_timeout`` for a row lock (another transaction holding an account or a
profile), so repair never queues the auth service's writes behind its own
wait; a busy row is named, and the next run takes it. A write that raises no
error yet leaves the account without a profile (an app's trigger or rule
swallowed the insert) is a failure too, recorded with the trigger named. A
step with nothing to do writes no audit row; ``plan`` counts what a run would do (``--dry-run``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ghostsync import backfill, delete_rules, health, names, sync
from ghostsync.audit import finish_run, start_run
from ghostsync.chain import Declared
from ghostsync.errors import describe
from ghostsync.migrations import dberrors
from ghostsync.models import sync_failures

ORPHAN_IDS_LOGGED = 10_000
ERRORS_LOGGED = 1_000  # rows named in an audit row; the command line prints every one it found
DEFAULT_LOCK_TIMEOUT = timedelta(milliseconds=400)
LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"


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


class _NoRowWritten(Exception):
    """A profile write that raised no error and wrote no row (its transaction is rolled back)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate, self.message = sqlstate, message


def _error(exc: DBAPIError) -> tuple[str, str]:
    return dberrors.sqlstate(exc) or "XX000", dberrors.primary_message(exc)


def _bound_lock_waits(conn: Connection, lock_timeout: timedelta) -> None:
    """This transaction waits at most ``lock_timeout`` for any lock (a row held by another transaction)."""
    conn.execute(text("SELECT pg_catalog.set_config('lock_timeout', :wait, true)"),
                 {"wait": f"{max(1, round(lock_timeout.total_seconds() * 1000))}ms"})


def _isolatable(sqlstate: str) -> bool:
    """An error that belongs to a row (its data, or its lock), so the rest of a batch can still be written."""
    return sqlstate[:2] in backfill.ROW_ERROR_CLASSES or sqlstate in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED)


def _reason(sqlstate: str, message: str, lock_timeout: timedelta) -> str:
    if sqlstate == LOCK_NOT_AVAILABLE:
        return (f"{sqlstate} busy: another transaction held its row longer than lock_timeout "
                f"({round(lock_timeout.total_seconds() * 1000)}ms); run repair again")
    return f"{sqlstate} {message}"


def repair_failed_syncs(conn: Connection, declared: Declared, *, limit: int | None = None,
                        lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT) -> StepResult:
    """Retry every recorded failure (or the oldest ``limit``); ``conn`` has no transaction begun."""
    result = StepResult(names.REPAIR_JOB)
    query = select(sync_failures.c.user_id, sync_failures.c.last_failed_at).order_by(sync_failures.c.last_failed_at)
    if limit is not None:
        query = query.limit(limit)
    with conn.begin():
        pending = conn.execute(query).all()
    if not pending:
        return result
    result.run_id = start_run(conn, names.REPAIR_JOB, {"mode": "cli"})
    write = text(sync.upsert_from_auth(declared, "ARRAY[CAST(:id AS uuid)]"))
    remove = text(sync.delete_orphans("ARRAY[CAST(:id AS uuid)]"))
    still_ghost = backfill.STILL_GHOSTS
    try:
        for user_id, failed_at in pending:
            try:
                with conn.begin():
                    _bound_lock_waits(conn, lock_timeout)
                    if not conn.execute(write, {"id": str(user_id)}).first() \
                            and not conn.execute(remove, {"id": str(user_id)}).first() \
                            and conn.execute(still_ghost, {"ids": [str(user_id)]}).first():
                        # no error, yet no profile: an app's trigger or rule swallowed the insert
                        raise _NoRowWritten(backfill.NO_ROW_WRITTEN, "the insert wrote no row: "
                                            + (backfill.skips_inserts(conn) or "something of the app")
                                            + " on public.users skipped it")
                    # cleared only if no newer failure was recorded meanwhile
                    conn.execute(delete(sync_failures).where(sync_failures.c.user_id == user_id,
                                                             sync_failures.c.last_failed_at == failed_at))
                result.done += 1
            except (DBAPIError, _NoRowWritten) as exc:
                result.failed += 1
                sqlstate, message = (exc.sqlstate, exc.message) if isinstance(exc, _NoRowWritten) else _error(exc)
                result.errors.append(f"{user_id}: {_reason(sqlstate, message, lock_timeout)}")
                with conn.begin():
                    conn.execute(update(sync_failures).where(sync_failures.c.user_id == user_id)
                                 .values(sqlstate=sqlstate, message=message if isinstance(exc, _NoRowWritten)
                                         else f"repair failed: {message}"))
    except BaseException as exc:
        finish_run(conn, result.run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                   result.done, {"error": backfill._error_text(exc)}, quiet=True)
        raise
    finish_run(conn, result.run_id, "succeeded" if result.failed == 0 else "partial", result.done,
               {"still_failing": result.failed, "errors": result.errors[:ERRORS_LOGGED]})
    return result


def _act_isolating(conn: Connection, act: str, ids: list[str], lock_timeout: timedelta,
                   result: StepResult) -> list[str]:
    """``act`` on ``ids`` in a transaction of its own; a batch that fails on a row is halved, so each
    row that cannot be written (its reason in ``result.errors``) costs about 2·log2(n) statements."""
    try:
        with conn.begin():
            _bound_lock_waits(conn, lock_timeout)
            return [str(r[0]) for r in conn.execute(text(act), {"ids": ids})]
    except DBAPIError as exc:
        sqlstate, message = _error(exc)
        if not _isolatable(sqlstate):
            raise
        if len(ids) == 1:
            result.failed += 1
            result.errors.append(f"{ids[0]}: {_reason(sqlstate, message, lock_timeout)}")
            return []
    middle = len(ids) // 2
    return (_act_isolating(conn, act, ids[:middle], lock_timeout, result)
            + _act_isolating(conn, act, ids[middle:], lock_timeout, result))


def _batched(conn: Connection, job: str, find: str, act: str, batch_size: int,
             details: Callable[[list[str]], dict[str, Any]] | None = None, *,
             lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT) -> StepResult:
    """Find ids in keyset batches (``find``: ``:after``, ``:limit``), act on each batch (``act``:
    ``:ids`` as text[], returning the ids it changed) in a transaction of its own, isolating the rows
    that cannot be written. The audit row is started with the first batch: no work, no row."""
    result = StepResult(job)
    changed: list[str] = []
    after: str | None = None
    try:
        while True:
            with conn.begin():
                ids = [str(r[0]) for r in conn.execute(text(find), {"after": after, "limit": batch_size})]
            if not ids:
                break
            if result.run_id is None:
                result.run_id = start_run(conn, job, {"mode": "cli", "batch_size": batch_size})
            done = _act_isolating(conn, act, ids, lock_timeout, result)
            result.done += len(done)
            changed += done
            after = ids[-1]
    except BaseException as exc:
        if result.run_id is not None:
            finish_run(conn, result.run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                       result.done, {"error": backfill._error_text(exc), **(details(changed) if details else {})},
                       quiet=True)
        raise
    if result.run_id is not None:
        outcome = {"still_failing": result.failed, "errors": result.errors[:ERRORS_LOGGED]} if result.failed else {}
        finish_run(conn, result.run_id, "partial" if result.failed else "succeeded", result.done,
                   {**(details(changed) if details else {}), **outcome})
    return result


def fix_stale_profiles(conn: Connection, declared: Declared, batch_size: int, *,
                       lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT) -> StepResult:
    """Rewrite every profile whose synced columns disagree with its account."""
    return _batched(conn, names.STALE_JOB, sync.stale_ids(declared),
                    sync.rewrite_from_auth(declared, "CAST(:ids AS uuid[])", only_stale=True), batch_size,
                    lock_timeout=lock_timeout)


def remove_orphans(conn: Connection, batch_size: int, *, lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT) -> StepResult:
    """Delete every profile whose account is gone; the ids go into the audit row."""
    def logged(ids: list[str]) -> dict[str, Any]:
        return {"ids": ids[:ORPHAN_IDS_LOGGED], "ids_left_out": max(0, len(ids) - ORPHAN_IDS_LOGGED)}

    return _batched(conn, names.ORPHAN_JOB, sync.orphan_ids(), sync.delete_orphans("CAST(:ids AS uuid[])"),
                    batch_size, logged, lock_timeout=lock_timeout)


def backfill_ghosts(conn: Connection, declared: Declared, batch_size: int) -> StepResult:
    """The batched backfill on ``conn`` (autocommit); no run (and no audit row) when there is no ghost."""
    result = StepResult(names.BACKFILL_JOB)
    if not health.any_ghost(conn):
        return result
    run = backfill.run_batched(conn, backfill.statements_for(declared), batch_size=batch_size, mode="repair")
    result.run_id, result.done, result.failed = run.run_id, run.repaired, run.unrepairable
    if run.unrepairable:
        result.errors.append(f"{run.unrepairable} ghost(s) could not be repaired (recorded in "
                             "ghostsync.sync_failures)")
    if run.status != "succeeded":
        result.not_done = f"the backfill ended {run.status}: {run.reason}"
    return result


def repair(engine: Engine, autocommit_engine: Engine, declared: Declared, *, batch_size: int,
           url: str | None = None, lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT) -> RepairReport:
    """All four steps; a step whose database work fails is reported and the next step still runs."""
    def guarded(job: str, run: Callable[[], StepResult]) -> StepResult:
        try:
            return run()
        except DBAPIError as exc:
            return StepResult(job, not_done=describe(exc, url))

    with engine.connect() as conn:
        failed = guarded(names.REPAIR_JOB, lambda: repair_failed_syncs(conn, declared, lock_timeout=lock_timeout))
        stale = guarded(names.STALE_JOB, lambda: fix_stale_profiles(conn, declared, batch_size,
                                                                   lock_timeout=lock_timeout))
        orphans = (StepResult(names.ORPHAN_JOB) if keeps_app_rows(conn, declared) else
                   guarded(names.ORPHAN_JOB, lambda: remove_orphans(conn, batch_size, lock_timeout=lock_timeout)))
    with autocommit_engine.connect() as conn:
        ghosts = guarded(names.BACKFILL_JOB, lambda: backfill_ghosts(conn, declared, batch_size))
    return RepairReport(failed, stale, orphans, ghosts)


def keeps_app_rows(conn: Connection, declared: Declared) -> bool:
    """Whether a profile without an account is the app's row to keep, not an orphan to delete."""
    if not delete_rules.applies(declared):
        return False
    if conn.in_transaction():
        return delete_rules.read(conn).keeps_app_rows
    with conn.begin():
        return delete_rules.read(conn).keeps_app_rows


@dataclass(frozen=True)
class Plan:
    """What a repair would do (``--dry-run``): the rows each step would take on."""

    failed_syncs: int
    stale: int
    orphans: int
    ghosts: int


def plan(conn: Connection, declared: Declared) -> Plan:
    """Count what each step would take on, reading only (the stale, orphan and ghost counts of status)."""
    counts = health.full_counts(conn, declared)
    return Plan(failed_syncs=health.count_failed_syncs(conn), stale=counts.stale,
                orphans=0 if keeps_app_rows(conn, declared) else counts.orphans, ghosts=counts.ghosts)
