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
- with a ``Sweep``, a last pass repairs every account still without a
  profile, so no ghost is left behind a resumed walk;
- Ctrl-C ends the run as ``interrupted``; any error ends it as ``failed`` with
  the error's SQLSTATE and message (never its DETAIL) in ``details``, then
  propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Integer,
    Text,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable

from ghostsync import names, sync
from ghostsync.chain import Declared
from ghostsync.health import count_ghosts
from ghostsync.models import audit_log, auth_users, sync_failures

JOB_NAME = names.BACKFILL_JOB
# Batches take well under a second; a run silent for a minute is dead (through a
# pooler, the only sign of it, as its server session lives on).
DEAD_AFTER_S = 60.0


@dataclass(frozen=True)
class BackfillStatements:
    """SQL text of one backfill run; bind parameters are named ``:name``.

    - ``mark_interrupted`` (``:job``, ``:dead_after`` seconds): close the rows of dead runs.
    - ``start`` (``:job``, ``:run_mode``): insert the ``running`` row, return its id.
    - ``batch`` (``:run_id``, ``:after``, ``:batch_size``): repair one batch and
      return ``last_id``, ``repaired``, ``scanned`` (``last_id`` NULL when done).
    - ``finish`` (``:run_id``, ``:run_status``, ``:run_error``): close the run.
    """

    mark_interrupted: str | Executable
    start: str | Executable
    batch: str | Executable
    finish: str | Executable
    row_by_row: RowByRow | None = None
    sweep: Sweep | None = None


@dataclass(frozen=True)
class Sweep:
    """A last pass over the accounts still without a profile (optional).

    ``batch`` (``:run_id``, ``:after``, ``:batch_size``) has the shape of the
    main batch, but walks only accounts that have no profile, so it repairs a
    ghost the walk could not see: one behind the point a resumed run started
    from, or made while a signup trigger was disabled. ``ghost_ids`` is its
    ``RowByRow.ghost_ids`` counterpart (``:after``, ``:batch_size``).
    """

    batch: str | Executable
    ghost_ids: str | Executable


@dataclass(frozen=True)
class RowByRow:
    """How to get past a batch that one bad row makes fail (optional).

    - ``ghost_ids`` (``:after``, ``:batch_size``): rows ``id, is_ghost`` of the batch's auth users;
    - ``repair_some`` (``:ghost_ids``, a list of ids as text): write those ghosts' profiles;
    - ``record_failure`` (``:ghost_id``, ``:failed_state``, ``:failed_message``): record a profile that
      cannot be written;
    - ``progress`` (``:run_id``, ``:repaired``, ``:last_id``): log the batch in the run's audit row.
    Without it, a failing batch fails the run (the backfill revision's behaviour).
    """

    ghost_ids: str | Executable
    repair_some: str | Executable
    record_failure: str | Executable
    progress: str | Executable


# SQLSTATE classes of errors caused by one row's data; anything else (a lost
# connection, a lock timeout, a shutdown) stops the run so it can be resumed.
ROW_ERROR_CLASSES = ("22", "23", "P0", "44")


def _statement(sql: str | Executable) -> Executable:
    return text(sql) if isinstance(sql, str) else sql


@dataclass
class BackfillResult:
    run_id: int
    status: str = "running"
    repaired: int = 0
    unrepairable: int = 0
    unrepairable_ids: set[str] = field(default_factory=set)
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
    start_after: Any = None,
    dead_after_s: float = DEAD_AFTER_S,
) -> BackfillResult:
    """Run the backfill on ``conn``, which must be in autocommit mode.

    ``start_after`` resumes the keyset walk after that id. ``max_batches``
    stops early (status ``interrupted``), as an operator's Ctrl-C would.
    ``dead_after_s``: a ``running`` run of the job with no progress for that
    long is taken for dead (see ``mark_interrupted``).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    conn.execute(_statement(statements.mark_interrupted), {"job": job_name, "dead_after": dead_after_s})
    run_id = int(conn.execute(_statement(statements.start), {"job": job_name, "run_mode": mode}).scalar_one())
    result = BackfillResult(run_id=run_id)
    try:
        passes = [(statements.batch, None if statements.row_by_row is None else statements.row_by_row.ghost_ids,
                   start_after, True)]
        if statements.sweep is not None:
            passes.append((statements.sweep.batch, statements.sweep.ghost_ids, None, False))
        for batch, ghost_ids, after, walking in passes:
            while True:
                if max_batches is not None and result.batches >= max_batches:
                    _finish(conn, statements, result, "interrupted", "stopped after max_batches")
                    return result
                began = time.perf_counter()
                try:
                    row = _batch_with_retries(conn, batch, run_id, after, batch_size)
                    last_id, repaired, scanned = row.last_id, int(row.repaired), int(row.scanned)
                except DBAPIError as exc:
                    if statements.row_by_row is None or ghost_ids is None or not _row_error(exc):
                        raise
                    last_id, repaired, scanned = _batch_row_by_row(
                        conn, statements.row_by_row, ghost_ids, run_id, after, batch_size, result.unrepairable_ids)
                    result.unrepairable = len(result.unrepairable_ids)
                elapsed = time.perf_counter() - began
                if last_id is None:
                    break
                after = last_id
                result.batches += 1
                result.repaired += repaired
                result.scanned += scanned if walking else 0
                result.batch_seconds.append(elapsed)
                result.longest_batch_s = max(result.longest_batch_s, elapsed)
                if on_batch is not None:
                    on_batch(result)
    except KeyboardInterrupt:
        _finish_quietly(conn, statements, result, "interrupted", "interrupted by the operator")
        raise
    except Exception as exc:
        _finish_quietly(conn, statements, result, "failed", _error_text(exc))
        raise
    _finish(conn, statements, result, "succeeded", None)
    return result


FOREIGN_KEY_VIOLATION = "23503"
BATCH_ATTEMPTS = 3


def _error_text(exc: BaseException) -> str:
    """What an audit row keeps of an error: its SQLSTATE and primary message, never its DETAIL
    or the statement (which can hold row data such as an email)."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        code = getattr(orig, "pgcode", None) or ""
        primary = getattr(getattr(orig, "diag", None), "message_primary", None)
        first = (primary or str(orig)).strip().splitlines()
        return f"{code} {first[0] if first else ''}".strip()
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}".strip()


def _batch_with_retries(
    conn: Connection, batch: str | Executable, run_id: int, after: Any, batch_size: int
) -> Any:
    """One batch; repeated when an auth user it read was deleted before its profile was written."""
    for attempt in range(BATCH_ATTEMPTS):
        try:
            return conn.execute(
                _statement(batch),
                {"run_id": run_id, "after": after, "batch_size": batch_size},
            ).one()
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) != FOREIGN_KEY_VIOLATION or attempt == BATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _row_error(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "pgcode", None) or ""
    return code[:2] in ROW_ERROR_CLASSES


def _batch_row_by_row(
    conn: Connection, steps: RowByRow, ghost_ids: str | Executable, run_id: int, after: Any, batch_size: int,
    known_bad: set[str],
) -> tuple[Any, int, int]:
    """The failed batch again, halved until each bad ghost stands alone; those are recorded, not retried."""
    rows = conn.execute(_statement(ghost_ids), {"after": after, "batch_size": batch_size}).all()
    if not rows:
        return None, 0, 0
    # a ghost this run already found it cannot repair (the walk, then the sweep) is not tried twice
    ghosts = [str(user_id) for user_id, is_ghost in rows if is_ghost and str(user_id) not in known_bad]
    repaired, bad = _repair_halving(conn, steps, ghosts)
    known_bad.update(bad)
    last_id = rows[-1][0]
    conn.execute(_statement(steps.progress), {"run_id": run_id, "repaired": repaired, "last_id": last_id})
    return last_id, repaired, len(rows)


def _repair_halving(conn: Connection, steps: RowByRow, ghosts: list[str]) -> tuple[int, list[str]]:
    """(repaired, ids recorded as failed): one statement per half, so a bad row costs about 2·log2(n) statements."""
    if not ghosts:
        return 0, []
    try:
        written = conn.execute(_statement(steps.repair_some), {"ghost_ids": ghosts}).rowcount
        return int(written or 0), []
    except DBAPIError as exc:
        if not _row_error(exc):
            raise
        if len(ghosts) == 1:
            diag = getattr(exc.orig, "diag", None)
            message = getattr(diag, "message_primary", None) or str(exc.orig).splitlines()[0]
            conn.execute(_statement(steps.record_failure),
                         {"ghost_id": ghosts[0], "failed_state": getattr(exc.orig, "pgcode", None) or "XX000",
                          "failed_message": message})
            return 0, [ghosts[0]]
    middle = len(ghosts) // 2
    left = _repair_halving(conn, steps, ghosts[:middle])
    right = _repair_halving(conn, steps, ghosts[middle:])
    return left[0] + right[0], left[1] + right[1]


def _finish(
    conn: Connection, statements: BackfillStatements, result: BackfillResult, status: str, error: str | None
) -> None:
    conn.execute(_statement(statements.finish), {"run_id": result.run_id, "run_status": status, "run_error": error})
    result.status = status


def _finish_quietly(
    conn: Connection, statements: BackfillStatements, result: BackfillResult, status: str, error: str
) -> None:
    """Record the end of a broken run if the connection still works; the next run marks it otherwise."""
    try:
        _finish(conn, statements, result, status, error[:2000])
    except Exception:
        result.status = status


# -- the command line's statements, built from the models ----------------------

# Dead: its server session is gone, or (through a transaction-mode pooler, whose
# server sessions outlive their clients) no progress for :dead_after seconds.
_RUN_DEAD = text(
    "(NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a "
    "WHERE a.pid = (cleanup_audit_log.details ->> 'pid')::int "
    "AND a.backend_start = (cleanup_audit_log.details ->> 'backend_start')::timestamptz) "
    "OR coalesce((cleanup_audit_log.details ->> 'heartbeat_at')::timestamptz, cleanup_audit_log.started_at) "
    "< clock_timestamp() - make_interval(secs => CAST(:dead_after AS double precision)))"
)


def statements_for(declared: Declared) -> BackfillStatements:
    """The backfill as ``ghostsync backfill`` and ``repair`` run it, for what ``declared`` syncs.

    Each batch creates the missing profiles among the next ``:batch_size``
    accounts by id (``sync.create_missing``: the ghosts locked FOR KEY SHARE
    while their profiles are written); a last sweep over accounts still
    without a profile repairs any the walk could not see.
    """
    details = audit_log.c.details
    error = cast(bindparam("run_error", type_=Text), Text)
    mark_interrupted = (
        update(audit_log)
        .where(audit_log.c.job_name == bindparam("job"), audit_log.c.status == "running", _RUN_DEAD)
        .values(
            status="interrupted",
            finished_at=func.now(),
            details=details.op("||")(literal({"error": "the run ended without finishing"}, JSONB)),
        )
    )
    start = (
        insert(audit_log)
        .from_select(
            ["job_name", "status", "records_affected", "started_at", "details"],
            select(
                bindparam("job", type_=Text),
                literal("running"),
                literal(0),
                func.clock_timestamp(),
                func.jsonb_build_object(
                    "mode", cast(bindparam("run_mode", type_=Text), Text),
                    "pid", func.pg_backend_pid(),
                    "backend_start", literal_column("a.backend_start"),
                    "batches", 0,
                    "heartbeat_at", func.clock_timestamp(),
                ),
            )
            .select_from(text("pg_stat_activity AS a"))
            .where(text("a.pid = pg_backend_pid()")),
        )
        .returning(audit_log.c.id)
    )
    finish = (
        update(audit_log)
        .where(audit_log.c.id == bindparam("run_id"))
        .values(
            status=bindparam("run_status", type_=Text),
            finished_at=func.clock_timestamp(),
            details=case(
                (error.is_(None), details),
                else_=details.op("||")(func.jsonb_build_object("error", error)),
            ),
        )
    )
    walk = (
        "SELECT u.id FROM auth.users AS u\n"
        "WHERE CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid)\n"
        "ORDER BY u.id LIMIT :batch_size"
    )
    ghosts_of_batch = ("ARRAY(SELECT b.id FROM batch AS b\n"
                       "      WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL)")
    sweep = (
        "SELECT u.id FROM auth.users AS u\n"
        "WHERE (CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid))\n"
        "  AND NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = u.id)\n"
        "ORDER BY u.id LIMIT :batch_size"
    )
    return BackfillStatements(
        mark_interrupted=mark_interrupted, start=start, finish=finish,
        batch=_batch_statement(walk, sync.create_missing(declared, ghosts_of_batch)),
        row_by_row=RowByRow(
            ghost_ids=text(
                f"WITH batch AS ({walk})\n"
                "SELECT b.id, NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = b.id) FROM batch AS b\n"
                "ORDER BY b.id"),
            repair_some=text(sync.create_missing(declared, "CAST(:ghost_ids AS uuid[])")),
            record_failure=_record_failure(),
            progress=_progress(),
        ),
        sweep=Sweep(
            batch=_batch_statement(sweep, sync.create_missing(declared, "ARRAY(SELECT b.id FROM batch AS b)")),
            ghost_ids=text(f"WITH batch AS ({sweep})\nSELECT b.id, true FROM batch AS b ORDER BY b.id"),
        ),
    )


def _batch_statement(walk: str, create: str) -> Executable:
    return text(
        f"WITH batch AS (\n{walk}\n),\n"
        f"repaired AS (\n{create}\n),\n"
        "progress AS (\n"
        "  UPDATE public.cleanup_audit_log\n"
        "  SET records_affected = records_affected + (SELECT count(*) FROM repaired),\n"
        "      details = details || jsonb_build_object(\n"
        "        'batches', coalesce((details ->> 'batches')::int, 0) + 1,\n"
        "        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1),\n"
        "        'heartbeat_at', clock_timestamp())\n"
        "  WHERE id = :run_id AND EXISTS (SELECT 1 FROM batch)\n"
        "  RETURNING 1\n"
        ")\n"
        "SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,\n"
        "       (SELECT count(*) FROM repaired) AS repaired,\n"
        "       (SELECT count(*) FROM batch) AS scanned,\n"
        "       (SELECT count(*) FROM progress) AS logged"
    )


def _record_failure() -> Executable:
    failure = pg_insert(sync_failures).values(
        user_id=bindparam("ghost_id", type_=UUID(as_uuid=True)), operation="BACKFILL",
        sqlstate=bindparam("failed_state", type_=Text), message=bindparam("failed_message", type_=Text),
    )
    return failure.on_conflict_do_update(
        index_elements=[sync_failures.c.user_id],
        set_={
            "operation": failure.excluded.operation,
            "sqlstate": failure.excluded.sqlstate,
            "message": failure.excluded.message,
            "last_failed_at": func.now(),
            "failures": sync_failures.c.failures + 1,
        },
    )


def _progress() -> Executable:
    details = audit_log.c.details
    return (
        update(audit_log)
        .where(audit_log.c.id == bindparam("run_id"))
        .values(
            records_affected=audit_log.c.records_affected + bindparam("repaired", type_=Integer),
            details=details.op("||")(
                func.jsonb_build_object(
                    "batches", func.coalesce(cast(details["batches"].astext, Integer), 0) + 1,
                    "last_id", cast(bindparam("last_id"), UUID(as_uuid=True)),
                    "heartbeat_at", func.clock_timestamp(),
                )
            ),
        )
    )


# -- what the command line needs around a run --------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a backfill would do: ghosts to repair, auth users to walk, batches."""

    ghosts: int
    auth_users: int
    batch_size: int
    resume_after: Any

    @property
    def batches(self) -> int:
        return -(-self.auth_users // self.batch_size) if self.auth_users else 0


def estimated_auth_users(conn: Connection) -> int:
    """The planner's row estimate for auth.users (free; exact enough for a progress bar).

    A table never analyzed has no estimate (-1, or 0 with pages): then it is counted.
    """
    estimate, pages = conn.execute(
        text("SELECT reltuples::bigint, relpages FROM pg_class WHERE oid = 'auth.users'::regclass")
    ).one()
    if estimate is None or estimate < 0 or (estimate == 0 and pages > 0):
        return int(conn.execute(select(func.count()).select_from(auth_users)).scalar_one())
    return int(estimate)


def resume_point(
    conn: Connection, statements: BackfillStatements, job_name: str = JOB_NAME, dead_after_s: float = DEAD_AFTER_S
) -> Any:
    """The id after which to continue, if the newest run of the job was cut short; else None.

    A run resumed there still ends with the sweep over every account without
    a profile, so a ghost made behind the point (a restore, a disabled
    trigger) is repaired too.
    """
    conn.execute(_statement(statements.mark_interrupted), {"job": job_name, "dead_after": dead_after_s})
    row = conn.execute(
        select(audit_log.c.status, audit_log.c.details["last_id"].astext)
        .where(audit_log.c.job_name == job_name)
        .order_by(audit_log.c.id.desc())
        .limit(1)
    ).first()
    if row is None or row[0] not in ("interrupted", "failed") or row[1] is None:
        return None
    return row[1]


def plan(conn: Connection, batch_size: int, resume_after: Any = None) -> Plan:
    return Plan(
        ghosts=count_ghosts(conn),
        auth_users=estimated_auth_users(conn),
        batch_size=batch_size,
        resume_after=resume_after,
    )


def log_dry_run(conn: Connection, found: Plan, job_name: str = JOB_NAME) -> int:
    """Record a dry run (status ``dry_run``, nothing written) and return its audit id."""
    run_id = conn.execute(
        insert(audit_log)
        .values(
            job_name=job_name, status="dry_run", records_affected=0,
            started_at=func.clock_timestamp(), finished_at=func.clock_timestamp(),
            details={"would_repair": found.ghosts, "batch_size": found.batch_size, "batches": found.batches},
        )
        .returning(audit_log.c.id)
    ).scalar_one()
    return int(run_id)
