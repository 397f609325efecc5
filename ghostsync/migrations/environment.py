"""Alembic environment for ghostsync (run by ``env.py``, packaged and top-level alike).

Contract:
- The URL comes from ``-x database_url``, then ``ghostsync --database-url``
  (``config.attributes["database_url"]``), then ``DATABASE_URL``, then
  ``sqlalchemy.url`` in alembic.ini (``ghostsync.urls.resolve``); ``postgres://``
  and ``postgresql://`` run on psycopg2.
- A connection passed in ``config.attributes["connection"]`` is used as is
  (``ghostsync migrate``, tests, host applications): it must not be inside a
  transaction; an Engine there (pytest-alembic) is connected once per command.
- Each revision runs in its own transaction, so a lock taken by one revision
  is released before the next begins.
- A database error ends the command with one ``FAILED:`` line (``--raiseerr``
  for the traceback).
- A downgrade is checked before it starts by ``ghostsync migrate``
  (``ghostsync.preflight``), for this env and a host's alike; a plain
  ``alembic downgrade`` is not checked.
- Offline (``alembic upgrade head --sql``) prints SQL that psql, or the
  Supabase SQL editor, applies as the ``postgres`` role.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ghostsync import database, names, urls
from ghostsync.errors import GhostsyncError, describe
from ghostsync.migrations import settings
from ghostsync.models import metadata

# Offline (--sql) only the dialect matters: no database is contacted.
OFFLINE_URL = "postgresql+psycopg2://"


def database_url() -> str:
    """The URL this env connects to (``urls.resolve``, the order every road takes)."""
    try:
        return urls.resolve(context.config.attributes.get("database_url"),
                            x_argument=context.get_x_argument(as_dictionary=True).get("database_url"),
                            ini_value=context.config.get_main_option("sqlalchemy.url"))
    except urls.BadDatabaseURL as exc:
        raise CommandError(str(exc)) from None


GHOSTSYNC_SCHEMAS = (None, "public", "ghostsync")
GHOSTSYNC_TABLES = {"users", "cleanup_audit_log", "sync_failures", "objects"}


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate reflects only ghostsync's own tables (public and ghostsync schemas)."""
    if type_ == "schema":
        return name in GHOSTSYNC_SCHEMAS
    if type_ == "table":
        return name in GHOSTSYNC_TABLES
    return True


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """auth.users is the auth service's table: modelled for queries, never compared."""
    return not (type_ == "table" and getattr(obj, "schema", None) == "auth")


def comparison_metadata(default_schema: str | None) -> MetaData:
    """The models as autogenerate must see them: the default schema left implicit.

    Alembic reflects the tables of the connection's default schema (public) with
    schema None; the models name "public" explicitly so every query is
    qualified. Compared as is, every foreign key of public.users would look
    removed and re-added. Used only for comparing; the revisions run raw SQL.
    """
    compared = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(compared, schema=None if table.schema == default_schema else table.schema)  # type: ignore[arg-type]
    return compared


def run_migrations_offline() -> None:
    context.configure(
        url=database_url_or_none() or OFFLINE_URL,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Engine):
        # pytest-alembic passes its engine: one connection per command, so no
        # transaction is left open between commands.
        with _failing_in_one_line(connection.url), connection.connect() as conn:
            _run_on(conn)
        return
    if connection is not None:
        _run_on(connection)
        return
    url = database_url()
    with database.opened(url, application_name=names.APPLICATION["migrate"]) as engine, \
            _failing_in_one_line(url), engine.connect() as conn:
        _run_on(conn)


@contextmanager
def _failing_in_one_line(url: object) -> Iterator[None]:
    """A database error, connecting included, ends the command with one FAILED: line (--raiseerr: traceback)."""
    try:
        yield
    except DBAPIError as exc:
        said = describe(exc, str(url))
        if exc.statement is None and not exc.connection_invalidated:  # while connecting: nothing ran yet
            raise CommandError(said) from exc
        raise CommandError(
            f"{said}; each revision commits on its own, so the ones before "
            "this one are applied: run the same command again once the cause is fixed"
        ) from exc


def _refuse_standby(conn: Connection) -> None:
    """A hot standby takes no migration: say so in one line before anything is tried."""
    try:
        database.refuse_standby(conn)
    except GhostsyncError as exc:
        raise CommandError(f"ghostsync: {exc}") from None


def _run_on(connection: Connection) -> None:
    with _failing_in_one_line(connection.engine.url.render_as_string(hide_password=True)):
        _refuse_standby(connection)
        _configure_and_run(connection)


def database_url_or_none() -> str | None:
    try:
        return database_url()
    except CommandError:
        return None


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=comparison_metadata(connection.dialect.default_schema_name),
        transaction_per_migration=True,
        include_schemas=True,
        include_name=include_name,
        include_object=include_object,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()



def check_settings() -> None:
    """Refuse a bad ``-x`` setting with one line before the first statement (offline: before a line of SQL
    is printed), not inside the first revision that reads it."""
    try:
        settings.check_x_arguments(context.get_x_argument(as_dictionary=True))
    except settings.SettingError as exc:
        raise CommandError(str(exc)) from None


def run() -> None:
    """What an ``env.py`` does: configure logging from the ini, check the ``-x`` settings, then run online
    or offline."""
    config = context.config
    if config.config_file_name is not None and config.attributes.get("configure_logger", True):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    check_settings()
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()
