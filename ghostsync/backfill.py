"""The batched ghost repair: batches over auth.users, each its own transaction.

One run is one row in ``cleanup_audit_log``. The runner is the mechanism only;
the statements come from the caller in a ``BackfillStatements`` (``statements_for``).
The backfill revision does not use this module: its job runs through
``ghostsync.migrations.jobs`` with its own frozen text, so changing this module
never changes what that revision does.

Contract of a run:
- rows still marked ``running`` by a run whose backend is gone are marked
  ``interrupted`` first (a crash or SIGKILL leaves exactly such a row);
- each batch is one statement in autocommit: it repairs the ghosts among the
  next ``batch_size`` auth users and records progress in the run's audit row,
  atomically; a crash loses at most the batch in flight;
- a second run repairs what is left and never duplicates;
- Ctrl-C ends the run as ``interrupted``; any error ends it as ``failed`` with
  the error's SQLSTATE and message (never its DETAIL) in ``details``, then
  propagates;
- a batch waits for a row lock at most ``lock_timeout``, and is tried again
  while the lock stays busy (``ghostsync.row_locks``);
- with ``RowByRow`` statements, a row that cannot be written (an app's CHECK, an
  app column NOT NULL without a default) is recorded and the rest written; an
  insert an app's BEFORE INSERT trigger or INSTEAD rule swallowed (no error, no
  row) is recorded too (SQLSTATE ``02000``, the trigger named), and where such a
  trigger exists every ghost left is taken once more by id; a run that leaves a
  ghost it could not write ends ``partial`` (``details.error`` says how many and
  why), never ``succeeded``;
- it says ``succeeded`` only for what it saw: the sweep first waits for the
  transactions writing auth.users (``Sweep``), else the run ends ``interrupted``.

The command line's run (``statements_for``) walks auth.users in its physical
order (``PhysicalWalk``: ranges of heap pages, read as a single statement
reads the table, where a walk by random UUID reads one heap page per
account), then sweeps (``Sweep``). A walk in physical order can miss an
account whose row moves behind it while it runs (an UPDATE that cannot stay
on its page writes the new version wherever there is room) or that a
transaction still open when the walk passed commits later. Every such row
version was written by a transaction at or after the oldest one running when
the walk began (the horizon), so the sweep checks exactly those, in one
read-only statement with one snapshot, and repairs the ghosts among them by
id. A resumed walk, or a table rewritten meanwhile (VACUUM FULL, CLUSTER: the
positions mean nothing any more), gets the full sweep instead: every account
by id, which no move can escape. No ghost that existed when the run began is
left behind it (tests/test_backfill_walk.py forces each case).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
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

from ghostsync import names, row_locks, sync
from ghostsync.chain import Declared
from ghostsync.health import count_ghosts
from ghostsync.migrations import dberrors, jobs, settings
from ghostsync.models import audit_log, sync_failures

JOB_NAME = names.BACKFILL_JOB
# One home for each, in the migrations package (the revisions' jobs use them too).
estimated_auth_users = jobs.estimated_auth_users
_error_text = jobs.error_text
# A run's result, how to get past a batch one row makes fail, and what makes a row unwritable: the
# revisions' jobs do the same (ghostsync.migrations.jobs), so each lives there once.
BackfillResult = jobs.JobResult
RowByRow = jobs.RowByRow
ROW_ERROR_CLASSES = jobs.ROW_ERROR_CLASSES
NO_ROW_WRITTEN = jobs.NO_ROW_WRITTEN
STILL_GHOSTS = text(jobs.STILL_GHOSTS)
skips_inserts = jobs.skips_inserts
_row_error = jobs.row_error
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
    # The command line's walk in physical order.
    physical: PhysicalWalk | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class PhysicalWalk:
    """The walk of auth.users in its physical order, in ranges of heap pages (optional).

    A batch's range is ``:batch_size`` accounts' worth of heap pages (from the
    table's density in pg_class) after ``:after`` (``page N``, the last page the
    previous batch walked; anything else, NULL included: the first page). Every
    batch statement has the parameters and the result of ``BackfillStatements.batch``,
    which is the checked and locked one:

    - checked: probe each account's profile and insert the missing ones (ON CONFLICT
      DO NOTHING); unchecked: insert a profile for every account of the range, which
      fails with a unique violation (23505) when one has a profile: the runner then
      walks that range again checked, and goes back to unchecked after a checked
      range held only ghosts. A range of ghosts costs no probe and no speculative
      insertion; a range of members costs one failed row and the probes;
    - locked: lock the ghosts FOR KEY SHARE while their profiles are written (no
      hard delete between the read and the commit, so no orphan); unlocked: leave
      that to the profile table's foreign key to auth.users, whose check takes the
      same lock (a delete between the read and the check fails the batch with 23503,
      and the runner repeats it).

    ``has_key`` returns true when public.users has an enforced foreign key on id to
    auth.users(id); without one the runner uses only the locked statements.
    """

    checked: str | Executable
    unchecked_locked: str | Executable
    unchecked: str | Executable
    has_key: str | Executable


@dataclass(frozen=True)
class Sweep:
    """What follows a walk in physical order, so that no ghost is left behind it (optional).

    - ``horizon``: one row, ``horizon`` (the oldest transaction still running, as a
      32-bit xid, text) and ``relfilenode`` of auth.users; read before the walk's
      first batch and again before the sweep;
    - ``recent_ghosts`` (``:horizon``): ids of the accounts without a profile among the
      row versions of auth.users written at or after the horizon: one read-only
      statement, one snapshot, so a row moving while it runs is still seen once;
    - ``ghosts_after`` (``:after`` id or NULL, ``:span``): the next ``:span`` accounts by
      id (``last_id``, NULL when none is left) and ``ghosts``, the ids among them
      without a profile, as text: the full sweep, for a resumed walk or a rewritten
      table.

    - ``writers``, ``writers_open``: the transactions writing auth.users when the sweep begins,
      and how many of them are still open (``ghostsync.migrations.jobs.JobSweep``). The sweep
      waits for them (at most ``writers_wait``) before it reads: one that was open at the horizon
      (a replica-mode import, whose inserts fire no trigger) may commit accounts behind the walk
      after any snapshot the run took; one still open after the wait ends the run ``interrupted``
      with the reason (a resumed run ends with the full sweep), never ``succeeded``.

    Ghosts found are repaired by id with ``RowByRow.repair_some`` in batches of
    ``batch_size``, halved around a row that cannot be written (recorded, as in the walk).
    """

    horizon: str | Executable
    recent_ghosts: str | Executable
    ghosts_after: str | Executable
    writers: str = ""
    writers_open: str = ""


def _statement(sql: str | Executable) -> Executable:
    return text(sql) if isinstance(sql, str) else sql


ProgressCallback = jobs.ProgressCallback


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
    row_lock_budget: row_locks.RowLockBudget | None = None,
    writers_wait_s: float | None = None,
) -> BackfillResult:
    """Run the backfill on ``conn``, which must be in autocommit mode.

    ``start_after`` resumes the walk after that position (an id for a keyset
    walk, ``page N`` for a walk in physical order). ``max_batches`` stops early
    (status ``interrupted``), as an operator's Ctrl-C would. ``dead_after_s``: a
    ``running`` run of the job with no progress for that long is taken for dead
    (see ``mark_interrupted``). ``row_lock_budget``: how long a batch waits for a row lock
    (default: ``RowLockBudget.configured()``, from the environment). ``writers_wait_s``: how long the
    sweep waits for open writers of auth.users (default: ``GHOSTSYNC_WRITERS_WAIT``).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    conn.execute(_statement(statements.mark_interrupted), {"job": job_name, "dead_after": dead_after_s})
    run_id = int(conn.execute(_statement(statements.start), {"job": job_name, "run_mode": mode}).scalar_one())
    result = BackfillResult(run_id=run_id)
    run = _Run(conn, statements, result, batch_size, max_batches, on_batch,
               row_lock_budget or row_locks.RowLockBudget.configured(),
               settings.resolve_duration("writers_wait").total_seconds() if writers_wait_s is None
               else writers_wait_s)
    try:
        # Before the walk's first batch: every row version written from here on is the sweep's.
        before = conn.execute(_statement(statements.sweep.horizon)).one() if statements.sweep else None
        if statements.physical is not None:
            resumed = _page(start_after) is not None
            done = run.walk_physically(statements.physical, start_after if resumed else None)
        else:
            resumed = start_after is not None
            done = run.walk_by_key(start_after)
        if done and statements.sweep is not None:
            done = run.sweep(statements.sweep, None if resumed else before)
        if done and run.skippers:
            # An app's rule or BEFORE INSERT trigger can swallow an insert without an error: the
            # walk's batches cannot tell, so every ghost left is taken once more by id and recorded.
            done = run.sweep(statements.sweep, None) if statements.sweep else run.leftovers_by_key()
        if not done:
            _finish(conn, statements, result, "interrupted", "stopped after max_batches")
            return result
    except jobs.Interrupted as stop:
        _finish(conn, statements, result, "interrupted", str(stop))
        return result
    except KeyboardInterrupt:
        _finish_quietly(conn, statements, result, "interrupted", "interrupted by the operator")
        raise
    except Exception as exc:
        _finish_quietly(conn, statements, result, "failed", _error_text(exc))
        raise
    if result.unrepairable:
        # never "succeeded" while a ghost stays: the audit row says how many and why
        _finish(conn, statements, result, "partial", result.partial_reason("ghostsync.sync_failures"))
        return result
    _finish(conn, statements, result, "succeeded", None)
    return result


def _page(position: Any) -> int | None:
    """The page of a physical walk's position (``page N``); None for anything else (an id, NULL)."""
    match = re.fullmatch(r"page (\d+)", str(position)) if position is not None else None
    return int(match.group(1)) if match else None


UNIQUE_VIOLATION = "23505"


class _Run:
    """One run's batches: the walk (by key, or in physical order), then the sweep."""

    def __init__(self, conn: Connection, statements: BackfillStatements, result: BackfillResult, batch_size: int,
                 max_batches: int | None, on_batch: ProgressCallback | None,
                 row_lock_budget: row_locks.RowLockBudget, writers_wait_s: float) -> None:
        self.conn = conn
        self.writers_wait_s = writers_wait_s
        self.row_lock_budget = row_lock_budget
        self.statements = statements
        self.result = result
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.on_batch = on_batch
        # what can swallow an insert into public.users without an error (read once a run)
        self.skippers = skips_inserts(conn) if statements.row_by_row is not None else ""

    def _stop(self) -> bool:
        return self.max_batches is not None and self.result.batches >= self.max_batches

    def _count(self, began: float, repaired: int, scanned: int) -> None:
        elapsed = time.perf_counter() - began
        result = self.result
        result.batches += 1
        result.repaired += repaired
        result.scanned += scanned
        result.batch_seconds.append(elapsed)
        result.longest_batch_s = max(result.longest_batch_s, elapsed)
        if self.on_batch is not None:
            self.on_batch(result)

    def walk_by_key(self, after: Any) -> bool:
        """The statements' own batches (a revision's keyset walk); False when stopped early.

        Without ``row_by_row`` a row that cannot be written fails the batch; with it, the batch's
        ghosts are written by id, halved around the rows that cannot be (recorded)."""
        steps = self.statements.row_by_row
        while not self._stop():
            began = time.perf_counter()
            try:
                row = _batch_with_retries(self.conn, self.statements.batch, self.result.run_id, after,
                                          self.batch_size, self.row_lock_budget)
            except DBAPIError as exc:
                if steps is None or not _row_error(exc):
                    raise
                last_id, repaired, scanned = self._keyed_row_by_row(steps, after)
                if last_id is None:
                    return True
                after = last_id
                self._count(began, repaired, scanned)
                continue
            if row.last_id is None:
                return True
            after = row.last_id
            self._count(began, int(row.repaired), int(row.scanned))
        return False

    def walk_physically(self, walk: PhysicalWalk, after: Any) -> bool:
        """Ranges of heap pages from ``after`` to the end; False when stopped early."""
        conn, steps = self.conn, self.statements.row_by_row
        locked = not conn.execute(_statement(walk.has_key)).scalar()
        # A range of ghosts goes in without a probe; the first member met turns probing on. Where an app's
        # trigger or rule can swallow an insert, every range is probed: its count of accounts walked stays true.
        always_checked = self.skippers != ""
        checked = always_checked
        while True:
            if self._stop():
                return False
            began = time.perf_counter()
            try:
                row, checked = self._physical_batch(walk, after, checked=checked, locked=locked)
                last_id, repaired, scanned = row.last_id, int(row.repaired), int(row.scanned)
            except DBAPIError as exc:
                if steps is None or not _row_error(exc):
                    raise
                last_id, repaired, scanned = self._physical_row_by_row(steps, after)
                checked = True
            if last_id is None:
                return True
            after = last_id
            if checked and scanned and repaired == scanned and not always_checked:
                checked = False  # the range held only ghosts: the next one is likely to, too
            self._count(began, repaired, scanned)

    def _physical_batch(self, walk: PhysicalWalk, after: Any, *, checked: bool, locked: bool) -> tuple[Any, bool]:
        run_id = self.result.run_id
        if not checked:
            try:
                unchecked = walk.unchecked_locked if locked else walk.unchecked
                return _batch_with_retries(self.conn, unchecked, run_id, after, self.batch_size,
                                           self.row_lock_budget), False
            except DBAPIError as exc:
                if dberrors.sqlstate(exc) != UNIQUE_VIOLATION:
                    raise
                # an account of the range has a profile: the same range again, probing each
        checked_statement = self.statements.batch if locked else walk.checked
        return _batch_with_retries(self.conn, checked_statement, run_id, after, self.batch_size,
                                   self.row_lock_budget), True

    def _physical_row_by_row(self, steps: RowByRow, after: Any) -> tuple[Any, int, int]:
        """A range that one bad row makes fail: its ghosts by id, halved around the bad rows (recorded)."""
        rows = self.conn.execute(_statement(steps.ghost_ids), {"after": after, "batch_size": self.batch_size}).all()
        if not rows:
            return None, 0, 0
        last_id = rows[0][0]
        ghosts = [str(user_id) for _, user_id, is_ghost in rows if user_id is not None and is_ghost]
        repaired = self._repair_logged(steps, ghosts, last_id)
        return last_id, repaired, sum(1 for row in rows if row[1] is not None)

    def _keyed_row_by_row(self, steps: RowByRow, after: Any) -> tuple[Any, int, int]:
        """A keyset batch that one bad row makes fail: its ghosts by id (``ghost_ids``: rows ``id, is_ghost``)."""
        rows = self.conn.execute(_statement(steps.ghost_ids), {"after": after, "batch_size": self.batch_size}).all()
        if not rows:
            return None, 0, 0
        last_id = rows[-1][0]
        repaired = self._repair_logged(steps, [str(r[0]) for r in rows if r[1]], str(last_id))
        return last_id, repaired, len(rows)

    def leftovers_by_key(self) -> bool:
        """Every ghost still there, by id in keyset batches (``ghost_ids``); False when stopped early."""
        steps = self.statements.row_by_row
        if steps is None:
            return True
        after = None
        while not self._stop():
            rows = self.conn.execute(_statement(steps.ghost_ids), {"after": after, "batch_size": self.batch_size}).all()
            if not rows:
                return True
            after = str(rows[-1][0])
            if not self._repair([str(r[0]) for r in rows if r[1]]):
                return False
        return False

    def sweep(self, sweep: Sweep, before: Any) -> bool:
        """The ghosts the walk could not see, by id; False when stopped early.

        ``before`` is what ``sweep.horizon`` read before the walk: with it, and auth.users
        not rewritten since, only the row versions written since the horizon are checked;
        without it (a resumed walk), every account is. First it waits for the transactions
        writing auth.users now (see ``Sweep``).
        """
        if sweep.writers:
            jobs.wait_for_writers(self.conn, sweep.writers, sweep.writers_open, self.writers_wait_s)
        now = self.conn.execute(_statement(sweep.horizon)).one()
        if before is not None and now.relfilenode == before.relfilenode:
            ghosts = [str(r[0]) for r in self.conn.execute(_statement(sweep.recent_ghosts),
                                                           {"horizon": before.horizon})]
            return self._repair(ghosts)
        span = max(10 * self.batch_size, 10_000)
        after = None
        while True:
            if self._stop():
                return False
            row = self.conn.execute(_statement(sweep.ghosts_after), {"after": after, "span": span}).one()
            if row.last_id is None:
                return True
            if not self._repair(list(row.ghosts or ())):
                return False
            after = row.last_id

    def _repair(self, ghosts: list[str]) -> bool:
        """Profiles for ``ghosts`` (ids) in batches, each halved around a row that cannot be written."""
        steps = self.statements.row_by_row
        if steps is None:
            raise ValueError("a Sweep needs RowByRow statements to repair what it finds")
        ghosts = [g for g in ghosts if g not in self.result.unrepairable_ids]
        for first in range(0, len(ghosts), self.batch_size):
            if self._stop():
                return False
            began = time.perf_counter()
            repaired = self._repair_logged(steps, ghosts[first:first + self.batch_size], None)
            self._count(began, repaired, 0)
        return True

    def _repair_logged(self, steps: RowByRow, ghosts: list[str], last_id: Any) -> int:
        """Profiles for ``ghosts``, halving around rows that cannot be written (recorded once, never
        tried again in this run), and the progress in the run's audit row; how many were written."""
        conn, budget = self.conn, self.row_lock_budget
        return jobs.repair_logged(
            conn, steps, self.result, ghosts, last_id, budget,
            write=lambda ids: int(row_locks.run(conn, steps.repair_some, {"ghost_ids": ids}, lambda r: r.rowcount,
                                                budget) or 0))


FOREIGN_KEY_VIOLATION = "23503"
BATCH_ATTEMPTS = 3


def _batch_with_retries(
    conn: Connection, batch: str | Executable, run_id: int, after: Any, batch_size: int,
    budget: row_locks.RowLockBudget,
) -> Any:
    """One batch; repeated when an auth user it read was deleted before its profile was written."""
    for attempt in range(BATCH_ATTEMPTS):
        try:
            return row_locks.run(conn, batch, {"run_id": run_id, "after": after, "batch_size": batch_size},
                                 lambda r: r.one(), budget)
        except DBAPIError as exc:
            if dberrors.sqlstate(exc) != FOREIGN_KEY_VIOLATION or attempt == BATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _finish(
    conn: Connection, statements: BackfillStatements, result: BackfillResult, status: str, error: str | None
) -> None:
    conn.execute(_statement(statements.finish), {"run_id": result.run_id, "run_status": status, "run_error": error})
    result.status = status
    result.reason = error


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

    A walk of auth.users in its physical order (``PhysicalWalk``): each batch
    creates the missing profiles of the accounts in the next ``:batch_size``
    accounts' worth of heap pages; then the sweep (``Sweep``) repairs, by id,
    the ghosts the walk could not see. ``batch`` is the walk's statement that
    is right for any profile table and any range (probing, ghosts locked FOR
    KEY SHARE while their profiles are written).
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
    values = sync.insert_values(declared, "u")
    columns = [sync.quote(c) for c in sync.insert_columns(declared)]
    return BackfillStatements(
        mark_interrupted=mark_interrupted, start=start, finish=finish,
        batch=_physical_batch(values, columns, checked=True, locked=True),
        row_by_row=RowByRow(
            ghost_ids=text(
                f"WITH {_WALK},\n"
                f"batch AS (SELECT u.id FROM auth.users AS u WHERE {_RANGE})\n"
                "SELECT 'page ' || w.last AS last_id, b.id,\n"
                "       (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL AS is_ghost\n"
                "FROM walk AS w LEFT JOIN batch AS b ON true\n"
                "WHERE w.more"),
            repair_some=text(sync.create_missing(declared, "CAST(:ghost_ids AS uuid[])")),
            record_failure=_record_failure(),
            progress=_progress(),
        ),
        sweep=Sweep(
            horizon=text(
                "SELECT (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint\n"
                "        % 4294967296)::text AS horizon,\n"
                "       c.relfilenode::text AS relfilenode\n"
                "FROM pg_catalog.pg_class AS c WHERE c.oid = 'auth.users'::pg_catalog.regclass"),
            # age() counts back from the same transaction for both sides: a row version written at or
            # after the horizon is no older than the horizon. A frozen row keeps its xmin: old, left out.
            recent_ghosts=text(
                "SELECT u.id FROM auth.users AS u\n"
                "WHERE pg_catalog.age(u.xmin) <= (SELECT pg_catalog.age(CAST(:horizon AS xid)))\n"
                "  AND (SELECT 1 FROM public.users AS p WHERE p.id = u.id) IS NULL"),
            ghosts_after=text(
                "WITH span AS (\n"
                "  SELECT u.id FROM auth.users AS u\n"
                "  WHERE CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid)\n"
                "  ORDER BY u.id LIMIT :span\n"
                ")\n"
                "SELECT (SELECT s.id FROM span AS s ORDER BY s.id DESC LIMIT 1) AS last_id,\n"
                "       CAST(ARRAY(SELECT s.id FROM span AS s\n"
                "                  WHERE (SELECT 1 FROM public.users AS p WHERE p.id = s.id) IS NULL) AS text[])\n"
                "         AS ghosts"),
            writers=WRITERS_OF_AUTH_USERS,
            writers_open=WRITERS_STILL_OPEN,
        ),
        physical=PhysicalWalk(
            checked=_physical_batch(values, columns, checked=True, locked=False),
            unchecked_locked=_physical_batch(values, columns, checked=False, locked=True),
            unchecked=_physical_batch(values, columns, checked=False, locked=False),
            has_key=text(_HAS_KEY),
        ),
    )


# The other transactions that hold a write lock on auth.users now (they may still commit accounts),
# by virtual transaction id, and how many of those still hold it (a transaction keeps its table
# locks until it ends). SHARE UPDATE EXCLUSIVE (VACUUM) and SHARE (CREATE INDEX) write no row.
WRITERS_OF_AUTH_USERS = (
    "SELECT CAST(ARRAY(SELECT DISTINCT l.virtualtransaction FROM pg_catalog.pg_locks AS l\n"
    "                  WHERE l.locktype = 'relation' AND l.relation = 'auth.users'::pg_catalog.regclass\n"
    "                    AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d\n"
    "                                      WHERE d.datname = pg_catalog.current_database())\n"
    "                    AND l.granted AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()\n"
    "                    AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock',\n"
    "                                   'AccessExclusiveLock')) AS text[]) AS writers")
WRITERS_STILL_OPEN = (
    "SELECT count(DISTINCT l.virtualtransaction) AS open FROM pg_catalog.pg_locks AS l\n"
    "WHERE l.virtualtransaction = ANY (CAST(:writers AS text[])) AND l.locktype = 'relation'\n"
    "  AND l.relation = 'auth.users'::pg_catalog.regclass")

# The batch's range: the pages after the position :after ("page N"; else from the first page),
# :batch_size accounts' worth of them by the table's density (40 rows a page before any ANALYZE),
# and whether the range starts inside the table (more) or past its end.
_WALK = """walk AS (
  SELECT w.first, w.first + w.pages - 1 AS last, w.first < w.size AS more
  FROM (
    SELECT coalesce(CAST(substring(CAST(:after AS text) FROM '^page ([0-9]+)$') AS bigint) + 1, 0) AS first,
           CAST(greatest(1, ceil(CAST(:batch_size AS float8)
                / CASE WHEN c.reltuples > 0 AND c.relpages > 0 THEN c.reltuples / c.relpages ELSE 40 END))
                AS bigint) AS pages,
           pg_catalog.pg_relation_size(c.oid) / CAST(pg_catalog.current_setting('block_size') AS bigint) AS size
    FROM pg_catalog.pg_class AS c WHERE c.oid = 'auth.users'::pg_catalog.regclass
  ) AS w
)"""

# Sub-selects, so the planner sees constants and scans only the range's pages (TID range scan).
_RANGE = ("u.ctid >= (SELECT CAST(pg_catalog.format('(%s,0)', w.first) AS tid) FROM walk AS w)\n"
          "  AND u.ctid < (SELECT CAST(pg_catalog.format('(%s,0)', w.last + 1) AS tid) FROM walk AS w)")

_HAS_KEY = """SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_constraint AS c
  WHERE c.conrelid = pg_catalog.to_regclass('public.users') AND c.contype = 'f'
    AND c.confrelid = 'auth.users'::pg_catalog.regclass
    AND c.conkey = ARRAY(SELECT a.attnum FROM pg_catalog.pg_attribute AS a
                         WHERE a.attrelid = c.conrelid AND a.attname = 'id')
    AND c.confkey = ARRAY(SELECT a.attnum FROM pg_catalog.pg_attribute AS a
                          WHERE a.attrelid = c.confrelid AND a.attname = 'id')
    -- enforced: its check trigger on the profile table fires (not disabled, not replica-only)
    AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t
                WHERE t.tgconstraint = c.oid AND t.tgrelid = c.conrelid AND t.tgenabled IN ('O', 'A')
                  AND t.tgfoid = 'pg_catalog."RI_FKey_check_ins"()'::pg_catalog.regprocedure)
)"""


def _physical_batch(values: list[str], columns: list[str], *, checked: bool, locked: bool) -> Executable:
    """One batch of the walk in physical order (see ``PhysicalWalk``)."""
    named = ",\n         ".join(f"{value} AS {column}" for value, column in zip(values, columns, strict=True))
    cols = ", ".join(columns)
    lock = "\n    FOR KEY SHARE OF u" if locked else ""
    if checked:
        # Probe by key; read again by position only the ghosts (locking them, where that is needed).
        ranged = (
            f"batch AS (SELECT u.ctid AS tid, u.id FROM auth.users AS u WHERE {_RANGE}),\n"
            "repaired AS (\n"
            f"  INSERT INTO public.users ({cols})\n"
            f"  SELECT {named}\n"
            "  FROM auth.users AS u\n"
            "  WHERE u.ctid = ANY (ARRAY(SELECT b.tid FROM batch AS b\n"
            "                            WHERE (SELECT 1 FROM public.users AS p WHERE p.id = b.id) IS NULL))"
            f"{lock}\n"
            "  ON CONFLICT (id) DO NOTHING\n"
            "  RETURNING 1\n"
            ")"
        )
        scanned = "(SELECT count(*) FROM batch)"
    else:
        ranged = (
            "repaired AS (\n"
            f"  INSERT INTO public.users ({cols})\n"
            f"  SELECT {named}\n"
            f"  FROM auth.users AS u WHERE {_RANGE}{lock}\n"
            "  RETURNING 1\n"
            ")"
        )
        scanned = "(SELECT count(*) FROM repaired)"
    return text(
        f"WITH {_WALK},\n"
        f"{ranged},\n"
        "progress AS (\n"
        "  UPDATE public.cleanup_audit_log AS l\n"
        "  SET records_affected = l.records_affected + (SELECT count(*) FROM repaired),\n"
        "      details = l.details || jsonb_build_object(\n"
        "        'batches', coalesce(CAST(l.details ->> 'batches' AS int), 0) + 1,\n"
        "        'last_id', 'page ' || w.last,\n"
        "        'heartbeat_at', clock_timestamp())\n"
        "  FROM walk AS w\n"
        "  WHERE l.id = :run_id AND w.more\n"
        "  RETURNING 1\n"
        ")\n"
        "SELECT CASE WHEN w.more THEN 'page ' || w.last END AS last_id,\n"
        "       (SELECT count(*) FROM repaired) AS repaired,\n"
        f"       {scanned} AS scanned,\n"
        "       (SELECT count(*) FROM progress) AS logged\n"
        "FROM walk AS w"
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
    return text(
        "UPDATE public.cleanup_audit_log\n"
        "SET records_affected = records_affected + CAST(:repaired AS int),\n"
        "    details = details || jsonb_strip_nulls(jsonb_build_object(\n"
        "      'batches', coalesce(CAST(details ->> 'batches' AS int), 0) + 1,\n"
        "      'last_id', CAST(:last_id AS text),\n"
        "      'heartbeat_at', clock_timestamp()))\n"
        "WHERE id = :run_id"
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


def resume_point(
    conn: Connection, statements: BackfillStatements, job_name: str = JOB_NAME, dead_after_s: float = DEAD_AFTER_S
) -> Any:
    """Where to continue (``page N``: after that heap page), if the newest run of the job was cut
    short; else None.

    A run resumed there ends with the full sweep, every account by id, so a
    ghost behind the point (a restore, a disabled trigger, a row that moved)
    is repaired too. A position this walk does not know (an id, from a keyset
    walk) starts the walk from the first page.
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
