"""Engines for the command line, from a Supabase URL: resolved once, opened and disposed in one place."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Engine

from ghostsync import urls

CONNECT_TIMEOUT_S = 10


def resolve_url(given: str | None) -> str:
    """``--database-url``, else ``DATABASE_URL``; made usable by ghostsync's connections (``ghostsync.urls``)."""
    return urls.normalize(given or os.environ.get("DATABASE_URL") or "")


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
