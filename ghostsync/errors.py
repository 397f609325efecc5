"""One line for every way a command can fail to do its job.

``describe`` turns an exception into a sentence that says what is wrong and
what to do; the command line prints it and exits 2. ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError

from ghostsync.migrations.dberrors import primary_message, sqlstate
from ghostsync.urls import BadDatabaseURL


class GhostsyncError(RuntimeError):
    """A failure whose message is already the one line to print."""


def _where(url: str | None) -> tuple[str, str]:
    try:
        parsed = make_url(url or "")
        return f"{parsed.host or 'localhost'}:{parsed.port or 5432}", parsed.username or "?"
    except Exception:
        return "the database", "?"


def describe(exc: BaseException, url: str | None = None) -> str:
    where, role = _where(url)
    if isinstance(exc, (GhostsyncError, BadDatabaseURL, CommandError, ValueError, RuntimeError)) \
            and not isinstance(exc, DBAPIError):
        first = str(exc).strip().splitlines()
        return first[0] if first else type(exc).__name__
    if isinstance(exc, NoSuchModuleError):
        return f"unsupported database URL driver: {exc}"
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        code = sqlstate(exc)
        message = primary_message(exc)
        text = str(orig)
        if code is None:
            if "Connection refused" in text:
                return f"cannot connect to {where}: connection refused; is the server running and the URL right?"
            if "could not translate host name" in text or "Name or service not known" in text:
                return f"cannot resolve the host of {where}: check the URL"
            if "password authentication failed" in text or "no password supplied" in text:
                return f"authentication failed for role {role} at {where}: check the user and password in the URL"
            if "does not exist" in text and "database" in text:
                return f"{message.removeprefix('FATAL:').strip()} at {where}: check the database name in the URL"
            if "timeout expired" in text:
                return f"timed out connecting to {where}: is the host reachable?"
            if "server closed the connection" in text or "connection already closed" in text or \
                    "terminating connection" in text:
                return (f"the connection to {where} was lost mid-run ({message}); run the command again: "
                        "a backfill resumes where it stopped")
            return f"cannot talk to {where}: {message}"
        if code == "42501":
            return (f"role {role} lacks a privilege ghostsync needs ({message}): run as the role that "
                    "installed ghostsync (postgres on Supabase)")
        if code == "40001" or "conflict with recovery" in text:
            return (f"the hot standby at {where} cancelled the check to apply the primary's changes ({message}): "
                    "run it again, or raise max_standby_streaming_delay on the standby")
        if code == "25006":
            return f"{message} at {where}: this command writes; run it against the primary, not a standby"
        if code == "55P03":
            return (f"database error 55P03: {message}: a row or table it needs was held by another transaction "
                    "longer than its lock budget (GHOSTSYNC_LOCK_TIMEOUT, GHOSTSYNC_LOCK_RETRIES); run it again "
                    "once that transaction ends: a backfill resumes where it stopped")
        if code in ("42P01", "3F000"):
            return f"{message}: is this a Supabase database with ghostsync installed?"
        if code and code.startswith("57P"):
            return (f"the server ended the session ({message}); run the command again: "
                    "a backfill resumes where it stopped")
        return f"database error {code}: {message}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
