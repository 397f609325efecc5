"""One line for every way a command can fail to do its job.

``describe`` turns an exception into a sentence that says what is wrong and
what to do; the command line prints it and exits 2. ``--debug`` shows the
traceback instead.

- An operator error (``is_operator_error``: ghostsync's own refusals, a bad
  setting or URL, Alembic's ``CommandError``, a file that cannot be written)
  is its own first line.
- A database error is read by its SQLSTATE (``ghostsync.migrations.dberrors``
  reads it for every driver), never by the words of its message, which the
  server's ``lc_messages`` and the driver choose. An error that has none
  (the driver's own: a refused connection, an unknown host, a connection
  lost) is told apart only by when it came: before any statement (cannot
  connect) or during one (lost mid-run), with the driver's first line.
- Anything else is a bug in ghostsync, and the line says so, with
  ``--debug`` for the traceback.
"""

from __future__ import annotations

from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from ghostsync.migrations.dberrors import primary_message, sqlstate
from ghostsync.urls import BadDatabaseURL

RUN_AGAIN = "run the command again: a backfill resumes where it stopped"


class GhostsyncError(RuntimeError):
    """A failure whose message is already the one line to print."""


def _operator_errors() -> tuple[type[BaseException], ...]:
    # imported here: these modules import this one
    from ghostsync.chain import ChainError
    from ghostsync.migrations.settings import SettingError
    from ghostsync.status import StatusError
    from ghostsync.version_table import AmbiguousVersionTable

    return (GhostsyncError, BadDatabaseURL, CommandError, RevisionError, ChainError, SettingError, StatusError,
            AmbiguousVersionTable, OSError)


def is_database_error(exc: BaseException) -> bool:
    """An error of the database or its driver (wrapped by SQLAlchemy or not)."""
    return isinstance(exc, DBAPIError) or hasattr(exc, "pgcode") or hasattr(exc, "sqlstate")


def is_operator_error(exc: BaseException) -> bool:
    """Whether ``exc`` is something the operator can act on (a database error included), not a bug."""
    return is_database_error(exc) or isinstance(exc, (*_operator_errors(), NoSuchModuleError, ArgumentError))


def _where(url: str | None) -> tuple[str, str]:
    try:
        parsed = make_url(url or "")
        return f"{parsed.host or 'localhost'}:{parsed.port or 5432}", parsed.username or "?"
    except ArgumentError:
        return "the database", "?"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe(exc: BaseException, url: str | None = None) -> str:
    """The one line for ``exc``; ``url`` (the database the command used, or None) names where."""
    if is_database_error(exc):
        return _database_error(exc, url)
    if isinstance(exc, NoSuchModuleError):
        return f"unsupported database URL driver: {exc}"
    if isinstance(exc, _operator_errors()):
        return _first_line(exc)
    return (f"a bug in ghostsync: {type(exc).__name__}: {_first_line(exc)}; run the command again with --debug for "
            "the traceback, and report it")


def _database_error(exc: BaseException, url: str | None) -> str:
    where, role = _where(url)
    code = sqlstate(exc)
    message = primary_message(exc)
    if code is None:
        # the driver's own error: no SQLSTATE. SQLAlchemy records the statement it was running, so an error
        # without one came while connecting.
        if isinstance(exc, DBAPIError) and exc.statement is None and not exc.connection_invalidated:
            return f"cannot connect to {where}: {message}; check the URL and that the server is reachable"
        return f"the connection to {where} was lost mid-run ({message}); {RUN_AGAIN}"
    if code in ("28P01", "28000"):
        return f"authentication failed for role {role} at {where} ({message}): check the user and password in the URL"
    if code == "3D000":
        return f"{message} at {where}: check the database name in the URL"
    if code == "42501":
        return (f"role {role} lacks a privilege ghostsync needs ({message}): run as the role that "
                "installed ghostsync (postgres on Supabase)")
    if code == "40001":
        # a read-only check on a standby: the recovery conflict is the serialization failure it can meet
        return (f"the hot standby at {where} cancelled the check to apply the primary's changes ({message}): "
                "run it again, or raise max_standby_streaming_delay on the standby")
    if code == "25006":
        from ghostsync.database import STANDBY_REFUSAL  # database imports this module

        return f"{message} at {where}: {STANDBY_REFUSAL}"
    if code == "55P03":
        return (f"database error 55P03: {message}: a row or table it needs was held by another transaction "
                "longer than its lock budget (GHOSTSYNC_LOCK_TIMEOUT, GHOSTSYNC_LOCK_RETRIES); run it again "
                "once that transaction ends: a backfill resumes where it stopped")
    if code in ("42P01", "3F000"):
        return f"{message}: is this a Supabase database with ghostsync installed?"
    if code.startswith("57P") or code.startswith("08"):
        return f"the server ended the session ({message}); {RUN_AGAIN}"
    return f"database error {code}: {message}"
