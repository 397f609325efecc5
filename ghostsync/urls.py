"""Database URLs as a host's settings hand them out, made usable by ghostsync's own connections.

Which URL (``resolve``), in one order for every command and env.py: ``-x database_url``,
``--database-url``, ``DATABASE_URL``, the ini's ``sqlalchemy.url``.

The rule, in one place: every connection ghostsync's commands open (``status``,
``repair``, ``backfill``, the packaged ``env.py`` of ``ghostsync migrate``) runs on
psycopg2, the driver ghostsync depends on, whatever form the URL takes:

- ``postgres://`` (Supabase's; SQLAlchemy does not know it) and ``postgresql://``
  (SQLAlchemy 2.1 maps it to psycopg 3) become ``postgresql+psycopg2://``;
- a URL that names another driver (``postgresql+psycopg://``, ``postgresql+asyncpg://``,
  the forms a host app's settings produce) gets psycopg2 too: ghostsync's commands are
  synchronous, and asyncpg cannot serve them;
- query parameters are libpq's for psycopg2 and psycopg 3 alike and stay as they are;
  asyncpg's own are translated (``ssl`` is libpq's ``sslmode``) or, where they only tune
  the asyncpg driver (its statement caches, its timeouts), left out.

A host's own process (its app, its ``alembic upgrade``) keeps the URL as it wrote it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DRIVER = "psycopg2"
# The one message for a command that was given no database (ghostsync migrate and every other command).
NO_URL = "no database URL: pass --database-url or set DATABASE_URL (postgresql://user:password@host:5432/dbname)"
# asyncpg's name for a connection setting -> libpq's
ASYNCPG_TO_LIBPQ = {"ssl": "sslmode"}
# Settings of the asyncpg driver (and SQLAlchemy's asyncpg dialect) with no libpq counterpart.
ASYNCPG_ONLY = frozenset({
    "prepared_statement_cache_size", "prepared_statement_name_func", "statement_cache_size",
    "max_cached_statement_lifetime", "max_cacheable_statement_size", "command_timeout", "timeout",
    "direct_tls", "server_settings", "record_class",
})


URL_VARIABLE = "DATABASE_URL"


class BadDatabaseURL(ValueError):
    """The database URL cannot be used; the message says why."""


def resolve(given: str | None = None, *, x_argument: str | None = None, ini_value: str | None = None,
            environ: Mapping[str, str] | None = None) -> str:
    """The database URL of a command or an env.py, chosen in the one order every road takes: Alembic's
    ``-x database_url``, then ``--database-url`` (``given``), then ``DATABASE_URL``, then the ini's
    ``sqlalchemy.url``; returned ``normalize``d. ``BadDatabaseURL`` (one line) when none is given or the
    chosen one cannot be used."""
    environ = os.environ if environ is None else environ
    for candidate in (x_argument, given, environ.get(URL_VARIABLE), ini_value):
        if candidate and candidate.strip():
            return normalize(candidate)
    raise BadDatabaseURL(NO_URL)


def normalize(url: str) -> str:
    """Return ``url`` for ghostsync's own connections (psycopg2, libpq's parameters; see the module
    doc); raise BadDatabaseURL if it is not a PostgreSQL URL."""
    url = (url or "").strip()
    if not url:
        raise BadDatabaseURL(NO_URL)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BadDatabaseURL("not a database URL (expected postgresql://user:password@host:5432/dbname)")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        # Which '@' ends the password is ambiguous; guessing would put part of it in the host name.
        raise BadDatabaseURL("the database URL has more than one '@' before the host: write an '@' in the "
                             "user name or password as %40")
    dialect, _, driver = scheme.partition("+")
    if dialect not in {"postgres", "postgresql"}:
        raise BadDatabaseURL(f"not a PostgreSQL URL (scheme {scheme!r}): {redact(url)}")
    try:
        parsed: URL = make_url(f"postgresql+{DRIVER}://{rest}")
    except ArgumentError as exc:
        raise BadDatabaseURL(f"cannot parse database URL {redact(url)}: {exc}") from None
    if driver == "asyncpg":
        query = {ASYNCPG_TO_LIBPQ.get(k, k): v for k, v in parsed.query.items() if k not in ASYNCPG_ONLY}
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


def for_host_env(url: str, ini_value: str | None) -> str:
    """``url`` as a host's ``env.py`` takes it (``sqlalchemy.url``, ``DATABASE_URL``): with the PostgreSQL
    driver its ini's own ``sqlalchemy.url`` names (an async env.py keeps asyncpg, a psycopg 3 one psycopg 3),
    else psycopg2 (``normalize``). Not escaped for an ini (``%`` stays ``%``)."""
    chosen = make_url(normalize(url))
    try:
        driver = make_url(ini_value).drivername if ini_value else ""
    except ArgumentError:
        driver = ""
    if driver == "postgresql" or driver.startswith("postgresql+"):
        chosen = chosen.set(drivername=driver)
    return chosen.render_as_string(hide_password=False)


def libpq_dsn(url: str) -> str:
    """The same URL in the form libpq (psycopg2.connect, psql) takes."""
    parsed = make_url(normalize(url)).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    try:
        return make_url(url.replace("postgres://", "postgresql://", 1)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"
