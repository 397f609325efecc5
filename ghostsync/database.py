"""Engines for the command line, from a Supabase URL: resolved once, opened and disposed in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection, Engine

from ghostsync import urls
from ghostsync.errors import GhostsyncError

CONNECT_TIMEOUT_S = 10
# The one answer of a command that writes to a hot standby (refuse_standby, and a 25006 the server gives).
STANDBY_REFUSAL = "this is a read-only hot standby: run the command against the primary; nothing was done"


def resolve_url(given: str | None) -> str:
    """``--database-url``, else ``DATABASE_URL`` (``urls.resolve``: the order every road takes)."""
    return urls.resolve(given)


def engine_for(url: str, *, autocommit: bool = False, application_name: str = "ghostsync") -> Engine:
    """An engine without pooling (one command, a few connections), with a connect timeout."""
    options: dict[str, object] = {
        "poolclass": pool.NullPool,
        "connect_args": {"application_name": application_name, "connect_timeout": CONNECT_TIMEOUT_S},
    }
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return create_engine(url, **options)


@contextmanager
def opened(url: str, *, autocommit: bool = False, application_name: str = "ghostsync") -> Iterator[Engine]:
    """An engine for the length of a ``with`` block, disposed at its end whatever happens."""
    engine = engine_for(url, autocommit=autocommit, application_name=application_name)
    try:
        yield engine
    finally:
        engine.dispose()


def refuse_standby(conn: Connection) -> None:
    """Refuse (``GhostsyncError``, one line) a command that writes, on a hot standby, before it tries anything.
    Leaves ``conn`` as it found it: no transaction begun by the check stays open."""
    began = not conn.in_transaction()
    standby = conn.exec_driver_sql("SELECT pg_catalog.pg_is_in_recovery()").scalar()
    if began and conn.in_transaction():
        conn.rollback()
    if standby:
        raise GhostsyncError(STANDBY_REFUSAL)
