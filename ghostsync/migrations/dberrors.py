"""What a database error says, read the same way for every PostgreSQL driver SQLAlchemy offers.

The drivers name the same facts differently: psycopg2 puts the SQLSTATE in ``pgcode``,
psycopg 3 in ``sqlstate``, and SQLAlchemy's adaptation of asyncpg in both; psycopg2 and
psycopg 3 give the primary message in ``diag.message_primary``, the asyncpg adaptation
only in its text. Everything in ghostsync that reads an error (the kit, the runtime) reads
it here. Imports nothing of ghostsync: the kit and the revisions may use it.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def _driver_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` (a DBAPIError, or the driver's own exception), or None when the
    error did not come from the server (a refused connection, a driver's own complaint)."""
    orig = _driver_error(exc)
    for source in (orig, getattr(orig, "diag", None)):
        for name in ("sqlstate", "pgcode"):
            value = getattr(source, name, None)
            if isinstance(value, str) and value:
                return value
    return None


def primary_message(exc: BaseException) -> str:
    """The server's primary message of ``exc`` (its first line), else the driver's text."""
    orig = _driver_error(exc)
    primary = getattr(getattr(orig, "diag", None), "message_primary", None)
    if not primary:
        # the asyncpg adaptation keeps asyncpg's exception as the cause; its message is the server's
        cause = orig.__cause__
        primary = getattr(cause, "message", None) if sqlstate(orig) else None
    text = (primary or str(orig)).strip()
    return text.splitlines()[0] if text else ""
