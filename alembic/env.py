"""Alembic environment for ghostsync.

Contract:
- The URL comes from ``-x database_url``, then ``DATABASE_URL``, then
  ``sqlalchemy.url`` in alembic.ini; ``postgres://`` and ``postgresql://`` run
  on psycopg2 (``ghostsync.urls``).
- A connection passed in ``config.attributes["connection"]`` is used as is
  (tests, pytest-alembic, host applications).
- Each revision runs in its own transaction, so a lock taken by one revision
  is released before the next begins.
- Offline (``alembic upgrade head --sql``) prints SQL that psql, or the
  Supabase SQL editor, applies as the ``postgres`` role.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import create_engine, pool

from ghostsync import urls
from ghostsync.models import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = metadata


def database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("database_url")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or ""
    )
    try:
        return urls.normalize(url)
    except urls.BadDatabaseURL as exc:
        raise CommandError(str(exc)) from None


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate compares only ghostsync's own tables in public."""
    if type_ == "schema":
        return name in (None, "public")
    if type_ == "table":
        return name in {"users", "cleanup_audit_log"}
    return True


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(
        database_url(),
        poolclass=pool.NullPool,
        connect_args={"application_name": "ghostsync-migrate"},
    )
    with engine.connect() as conn:
        _run_on(conn)
    engine.dispose()


def _run_on(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        transaction_per_migration=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
