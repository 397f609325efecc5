"""Engines for the command line, from a Supabase URL."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Engine

from ghostsync import urls
from ghostsync.errors import GhostsyncError


def resolve_url(given: str | None) -> str:
    """``--database-url``, else ``DATABASE_URL``; normalized for psycopg2."""
    url = given or os.environ.get("DATABASE_URL")
    if not url:
        raise GhostsyncError("no database: pass --database-url or set DATABASE_URL (postgresql://...)")
    return urls.normalize(url)


def engine_for(url: str, *, autocommit: bool = False, application_name: str = "ghostsync") -> Engine:
    """An engine without pooling (one command, a few connections), 10 s connect timeout."""
    options: dict[str, object] = {"poolclass": pool.NullPool,
                                  "connect_args": {"application_name": application_name, "connect_timeout": 10}}
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return create_engine(url, **options)
