"""The kit: everything a revision uses from the package, and nothing more.

This module is a stable contract. Revisions are frozen history; they reach
the package only through the names defined here, passing every setting
that shapes what they do as an explicit argument. A change here must never
change what an existing revision does: add a new function instead.

Lock-safe DDL for revisions.

A statement that locks ``auth.users`` or ``public.users`` must not queue
behind a long transaction: while it waits, every signup queues behind it.
``execute_guarded`` runs such a statement with ``SET LOCAL lock_timeout`` (a
per-transaction setting, so it holds through a transaction-mode pooler) inside
a savepoint, and when the lock cannot be had it rolls back to the savepoint,
waits with exponential backoff and tries again. After the last attempt it
raises ``LockNotAvailable``; the revision's transaction then rolls back and
the database stays as it was before that revision.

The helper never changes the statement it is given: the SQL text stays in
the revision file, frozen.

Settings (``alembic -x name=value`` first, then the environment):

=================  =============================  =======
-x                 environment                    default
=================  =============================  =======
lock_timeout       GHOSTSYNC_LOCK_TIMEOUT         2s
lock_retries       GHOSTSYNC_LOCK_RETRIES         5
statement_timeout  GHOSTSYNC_STATEMENT_TIMEOUT    60s
=================  =============================  =======

The statement timeout (also per transaction) bounds any single DDL step; the
backfill's batches run outside these transactions and are not subject to it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alembic import context, op
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from ghostsync.backfill import BackfillStatements, run_batched

LOCK_NOT_AVAILABLE = "55P03"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


class LockNotAvailable(CommandError):
    """A guarded statement could not get its lock within the configured attempts."""


def parse_duration_ms(value: str) -> int:
    """``"2s"``, ``"500ms"`` or ``"1.5"`` (seconds) as whole milliseconds."""
    match = _DURATION.match(value)
    if not match:
        raise CommandError(f"bad duration {value!r}: use e.g. 2s or 500ms")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return int(number if unit == "ms" else number * 1000)


@dataclass(frozen=True)
class LockPolicy:
    """How long to wait for a lock, and how often to try."""

    timeout_ms: int = 2000
    retries: int = 5
    statement_timeout_ms: int = 60000
    first_backoff_s: float = 0.25
    max_backoff_s: float = 5.0

    @classmethod
    def configured(cls) -> LockPolicy:
        """The policy from ``-x`` arguments or the environment, else the defaults."""
        x_args: dict[str, str] = context.get_x_argument(as_dictionary=True)
        timeout = x_args.get("lock_timeout") or os.environ.get("GHOSTSYNC_LOCK_TIMEOUT") or "2s"
        retries = x_args.get("lock_retries") or os.environ.get("GHOSTSYNC_LOCK_RETRIES") or "5"
        statement = (x_args.get("statement_timeout") or os.environ.get("GHOSTSYNC_STATEMENT_TIMEOUT")
                     or "60s")
        if not retries.isdigit():
            raise CommandError(f"bad lock_retries {retries!r}: use a whole number")
        return cls(timeout_ms=parse_duration_ms(timeout), retries=int(retries),
                   statement_timeout_ms=parse_duration_ms(statement))

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.first_backoff_s * (2**attempt)))


def execute_guarded(sql: str, what: str, policy: LockPolicy | None = None) -> None:
    """Run ``sql`` (one or more statements) under a lock timeout, retrying on lock timeouts.

    ``what`` names the step in the error message, e.g. "create trigger on auth.users".
    """
    policy = policy or LockPolicy.configured()
    set_timeout = (f"SET LOCAL lock_timeout = '{policy.timeout_ms}ms'; "
                   f"SET LOCAL statement_timeout = '{policy.statement_timeout_ms}ms'")
    if context.is_offline_mode():
        op.execute(f"SET LOCAL lock_timeout = '{policy.timeout_ms}ms'")
        op.execute(f"SET LOCAL statement_timeout = '{policy.statement_timeout_ms}ms'")
        op.execute(sql)
        return
    conn = op.get_bind()
    for attempt in range(policy.retries + 1):
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(set_timeout)
            conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
        except DBAPIError as exc:
            savepoint.rollback()
            if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            if attempt == policy.retries:
                raise LockNotAvailable(
                    f"gave up on '{what}': the lock was not free within {policy.timeout_ms} ms "
                    f"in {policy.retries + 1} attempts (a long transaction holds it); nothing of "
                    "this revision was applied. Retry later, or raise -x lock_timeout / -x lock_retries."
                ) from None
            time.sleep(policy.backoff(attempt))
        else:
            savepoint.commit()
            return


# -- one-line errors for checks the revisions make in SQL ----------------------

PREFIX = "ghostsync: "


def ghostsync_message(exc: DBAPIError) -> str | None:
    """The first line of a ``ghostsync:`` exception raised in SQL, else None."""
    primary = getattr(getattr(exc.orig, "diag", None), "message_primary", None) or str(exc.orig)
    first = primary.strip().splitlines()[0] if primary.strip() else ""
    return first if first.startswith(PREFIX) else None


@contextmanager
def raise_ghostsync_errors() -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        message = ghostsync_message(exc)
        if message is None:
            raise
        raise CommandError(message) from None


__all__ = ["BackfillStatements", "LockNotAvailable", "LockPolicy", "execute_guarded", "raise_ghostsync_errors", "run_batched"]
