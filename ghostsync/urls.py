"""Database URLs as Supabase hands them out, made usable by SQLAlchemy and psycopg2.

Supabase gives ``postgresql://`` and ``postgres://`` URLs. SQLAlchemy 2.1 maps a
bare ``postgresql://`` to psycopg 3 and does not know ``postgres://`` at all;
ghostsync depends on psycopg2, so both become ``postgresql+psycopg2://``.
A URL that already names a driver is left as it is.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError


class BadDatabaseURL(ValueError):
    """The database URL cannot be used; the message says why."""


def normalize(url: str) -> str:
    """Return ``url`` with the psycopg2 driver; raise BadDatabaseURL if it is not a PostgreSQL URL."""
    url = (url or "").strip()
    if not url:
        raise BadDatabaseURL("no database URL: set DATABASE_URL (postgresql://user@host:5432/dbname)")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BadDatabaseURL("not a database URL (expected postgresql://user:password@host:5432/dbname)")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        # Which '@' ends the password is ambiguous; guessing would put part of it in the host name.
        raise BadDatabaseURL("the database URL has more than one '@' before the host: write an '@' in the "
                             "user name or password as %40")
    if scheme in {"postgres", "postgresql"}:
        scheme = "postgresql+psycopg2"
    elif not scheme.startswith("postgresql+"):
        raise BadDatabaseURL(f"not a PostgreSQL URL (scheme {scheme!r}): {redact(url)}")
    try:
        parsed: URL = make_url(f"{scheme}://{rest}")
    except ArgumentError as exc:
        raise BadDatabaseURL(f"cannot parse database URL {redact(url)}: {exc}") from None
    return parsed.render_as_string(hide_password=False)


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
