"""Keeps a test's migrations on its throwaway database, whatever the host's ``env.py`` reads.

A host project's ``env.py`` decides where Alembic connects: Alembic's stock one
reads ``sqlalchemy.url`` from the ini (which names the team's real database),
the README's reads ``DATABASE_URL``, others read what they like. Two parts:

- ``hand_over(config, url)`` gives the throwaway database's URL to an Alembic
  ``Config`` every way ghostsync knows an ``env.py`` to read one:
  ``-x database_url``, ``config.attributes["database_url"]`` and
  ``sqlalchemy.url`` (``%`` escaped as ``%%``; the PostgreSQL driver the ini
  names is kept, so an async ``env.py`` keeps asyncpg); ``DATABASE_URL`` is set
  by ``only_on`` for as long as it is open.
- ``only_on(url)``: while it is open, every new connection SQLAlchemy makes in
  this process (any engine, any driver) must reach that database. One whose
  parameters name another database or port is refused before it connects; a
  live one is asked for ``current_database()`` and its server's port, and
  closed and refused if they differ. Either way the refusal is one line
  (``ConnectionElsewhere``), raised before a single statement of the
  migration runs there, and raised again when the block ends in case an
  ``env.py`` swallowed it.

``python -m ghostsync.testing.guard URL ALEMBIC_INI ARGUMENTS...`` is
``alembic -c ALEMBIC_INI ARGUMENTS`` with both, for tests that run ``alembic`` as a subprocess
(``SupabaseDatabase.alembic_cli``); a refusal there is one line and exit 2.
"""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic.config import CommandLine, Config
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from ghostsync.urls import BadDatabaseURL, for_host_env, redact

URL_ENV = "DATABASE_URL"
_CHECKED = "ghostsync.testing.guard"
_IDENTITY = "SELECT pg_catalog.current_database(), pg_catalog.current_setting('port')"


class ConnectionElsewhere(RuntimeError):
    """A connection made during a test's migration would not reach the test's database."""


@dataclass(frozen=True)
class Destination:
    """The database a test's migrations may reach: its name and its server's port."""

    dbname: str
    port: int
    shown: str

    @classmethod
    def of(cls, url: str) -> Destination:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1))
        if not parsed.database or not parsed.port:
            raise ValueError(f"a throwaway database's URL names its database and port: {redact(url)}")
        return cls(parsed.database, int(parsed.port), f"{parsed.database} on port {parsed.port}")

    def refuse(self, found: str) -> ConnectionElsewhere:
        return ConnectionElsewhere(
            f"ghostsync[testing]: refused a connection to {found}: this test's database is {self.shown}, and the "
            "host's env.py takes its URL from somewhere ghostsync did not set (it sets sqlalchemy.url, "
            "-x database_url and DATABASE_URL); nothing ran there")


def ini_url(url: str, ini_value: str | None) -> str:
    """``url`` as ``sqlalchemy.url`` takes it (``urls.for_host_env``), ``%`` escaped for the ini."""
    try:
        return for_host_env(url, ini_value).replace("%", "%%")
    except BadDatabaseURL:
        return url.replace("%", "%%")  # not ours to fix: the env.py says what is wrong with it


def hand_over(config: Config, url: str) -> Config:
    """Give ``url`` to ``config`` every way an env.py reads one (DATABASE_URL: ``only_on``); return it."""
    options = config.cmd_opts if config.cmd_opts is not None else Namespace()
    x = [arg for arg in (getattr(options, "x", None) or []) if not arg.startswith("database_url=")]
    options.x = [f"database_url={url}", *x]
    config.cmd_opts = options
    config.attributes["database_url"] = url
    config.set_main_option("sqlalchemy.url", ini_url(url, config.get_main_option("sqlalchemy.url")))
    return config


def _named(cparams: dict[str, Any]) -> tuple[str | None, int | None]:
    """The database and port a driver's connect parameters name (psycopg2, psycopg 3, asyncpg, pg8000)."""
    dbname = cparams.get("dbname") or cparams.get("database")
    port = cparams.get("port")
    try:
        return (str(dbname) if dbname else None), (int(port) if port else None)
    except (TypeError, ValueError):
        return (str(dbname) if dbname else None), None


@contextmanager
def only_on(url: str) -> Iterator[None]:
    """Refuse every new SQLAlchemy connection of this process that does not reach ``url``'s database;
    ``DATABASE_URL`` names ``url`` meanwhile."""
    destination = Destination.of(url)
    refused: list[ConnectionElsewhere] = []

    def refuse(found: str) -> ConnectionElsewhere:
        error = destination.refuse(found)
        refused.append(error)
        return error

    def before_connecting(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        dbname, port = _named(cparams)
        if (dbname is not None and dbname != destination.dbname) or (port is not None and port != destination.port):
            host = cparams.get("host") or "the default host"
            raise refuse(f"{dbname or 'the default database'} on {host} port {port or 'default'}")

    def check(dbapi_connection: Any, record: Any) -> None:
        if record.info.get(_CHECKED) == destination:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(_IDENTITY)
            dbname, port = cursor.fetchone()
        finally:
            cursor.close()
        dbapi_connection.rollback()
        if (dbname, int(port)) != (destination.dbname, destination.port):
            dbapi_connection.close()
            raise refuse(f"{dbname} on port {port}")
        record.info[_CHECKED] = destination

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        check(dbapi_connection, record)  # a pooled connection opened before the block began

    listeners = (("do_connect", before_connecting), ("connect", check), ("checkout", on_checkout))
    previous = os.environ.get(URL_ENV)
    os.environ[URL_ENV] = url
    for name, fn in listeners:
        event.listen(Engine, name, fn)
    try:
        yield
    finally:
        for name, fn in listeners:
            event.remove(Engine, name, fn)
        if previous is None:
            os.environ.pop(URL_ENV, None)
        else:
            os.environ[URL_ENV] = previous
    if refused:
        raise refused[0]  # an env.py that caught the refusal still refuses


def main(argv: list[str] | None = None) -> int:
    """``python -m ghostsync.testing.guard URL ALEMBIC_INI ARGUMENTS...``: ``alembic -c ALEMBIC_INI ARGUMENTS`` on
    ``URL``'s database only (the env.py is handed ``DATABASE_URL`` when set, else ``URL``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m ghostsync.testing.guard URL ALEMBIC_INI ALEMBIC-ARGUMENTS...", file=sys.stderr)
        return 2
    url, ini, rest = args[0], args[1], args[2:]
    line = CommandLine(prog="alembic")
    options = line.parser.parse_args(rest)
    if not hasattr(options, "cmd"):
        line.parser.error("too few arguments")
    config = Config(file_=ini, ini_section=options.name, cmd_opts=options)
    given = os.environ.get(URL_ENV) or url
    hand_over(config, given)
    try:
        with only_on(url):
            os.environ[URL_ENV] = given
            line.run_cmd(config, options)
    except ConnectionElsewhere as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
