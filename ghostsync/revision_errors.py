"""Turn ghostsync's own checks, raised inside the database, into one-line Alembic errors.

The revisions check preconditions in SQL (so the offline ``--sql`` output
checks them too) and raise ``'ghostsync: ...'`` exceptions there. Online,
Alembic would print such a database error with a traceback; inside
``raise_ghostsync_errors()`` it becomes a ``CommandError``, which the
``alembic`` command prints as one ``FAILED:`` line with exit status 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

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
