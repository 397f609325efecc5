"""Throwaway Supabase-like servers and databases, as the pytest plugin's fixtures hand them out.

In the style of pytest-postgresql: ``start_supabase_server`` starts one server
and loads a Supabase-like template database once; ``supabase_database`` clones
it for one test. pytest-postgresql's ``DatabaseJanitor`` makes every database.
``ghostsync.testing.plugin`` wraps both as fixtures.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psycopg2
import pytest
from alembic import command
from alembic.config import Config
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from ghostsync.chain import DEFAULT_INI
from ghostsync.testing import binaries, guard
from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.testing.server import SUPERUSER, ThrowawayServer
from ghostsync.testing.supabase import (
    DEFAULT_ROLE_SETUP,
    ROLE_SETUPS,
    grant_database_privileges,
    make_cluster_supabase_like,
    make_database_supabase_like,
)
from ghostsync.urls import normalize

MIGRATING_ROLE = "postgres"
TEMPLATE = "supabase_template"


@dataclass
class SupabaseServer:
    """A running server whose cluster is Supabase-like, with a template database.

    ``roles`` is its role setup, one of ``ROLE_SETUPS`` (see ``ghostsync.testing.supabase``).
    """

    server: ThrowawayServer
    template: str = TEMPLATE
    roles: str = DEFAULT_ROLE_SETUP

    @property
    def major(self) -> int:
        return self.server.binaries.major

    def janitor(self, dbname: str, **kwargs: Any) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=SUPERUSER, host=self.server.host, port=self.server.port,
            dbname=dbname, **kwargs,
        )


@dataclass
class SupabaseDatabase:
    """One throwaway database cloned from the Supabase-like template."""

    owner: SupabaseServer
    name: str
    alembic_ini: Path = DEFAULT_INI
    _engines: list[Engine] = field(default_factory=list)

    @property
    def server(self) -> ThrowawayServer:
        return self.owner.server

    def url(self, user: str = MIGRATING_ROLE, scheme: str = "postgresql") -> str:
        return self.server.url(self.name, user=user).replace("postgresql://", f"{scheme}://", 1)

    def engine(self, user: str = MIGRATING_ROLE) -> Engine:
        engine = create_engine(normalize(self.url(user)))
        self._engines.append(engine)
        return engine

    def auth(self, **kwargs: Any) -> AuthService:
        """A client that writes auth.users as the auth service does."""
        return AuthService(self.url(AUTH_ROLE), **kwargs)

    def sql(self, statement: str, params: Any = None, *, user: str = SUPERUSER) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit as ``user``; return its rows (if any)."""
        conn = psycopg2.connect(self.url(user))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def value(self, statement: str, params: Any = None, *, user: str = SUPERUSER) -> Any:
        rows = self.sql(statement, params, user=user)
        return rows[0][0] if rows else None

    def alembic_config(self, alembic_ini: str | Path | None = None, *, output_buffer: TextIO | None = None,
                       **x: str) -> Config:
        """An Alembic configuration of ``alembic_ini`` (default: the plugin's, ``self.alembic_ini``) that hands
        this database's URL to its env.py every way one reads it (``guard.hand_over``), with ``-x`` arguments
        ``x``. Run commands on it inside ``self.only_here()``."""
        return self._config(alembic_ini, x, output_buffer)

    def _config(self, alembic_ini: str | Path | None, x: dict[str, str], output_buffer: TextIO | None = None) -> Config:
        config = Config(str(alembic_ini or self.alembic_ini), output_buffer=output_buffer)
        config.cmd_opts = argparse.Namespace(x=[f"{k}={v}" for k, v in x.items()])
        config.attributes["configure_logger"] = False
        return guard.hand_over(config, self.url())

    @contextmanager
    def only_here(self) -> Iterator[None]:
        """While open, DATABASE_URL names this database and any SQLAlchemy connection of this process that would
        reach another database fails the test with one line, before anything runs there (``guard.only_on``)."""
        try:
            with guard.only_on(self.url()):
                yield
        except guard.ConnectionElsewhere as exc:
            pytest.fail(str(exc), pytrace=False)

    def upgrade(self, target: str = "heads", *, alembic_ini: str | Path | None = None, **x: str) -> None:
        """``alembic upgrade target`` on this database only: the chain of ``alembic_ini`` (default: the plugin's,
        ghostsync's own unless the host's was named), through the host's env.py."""
        with self.only_here():
            command.upgrade(self._config(alembic_ini, x), target)

    def downgrade(self, target: str = "base", *, alembic_ini: str | Path | None = None, **x: str) -> None:
        with self.only_here():
            command.downgrade(self._config(alembic_ini, x), target)

    def offline_sql(self, revisions: str, *, alembic_ini: str | Path | None = None, **x: str) -> str:
        """What ``alembic upgrade revisions --sql`` prints (an env.py that reads a URL offline gets this one)."""
        buffer = io.StringIO()
        with self.only_here():
            command.upgrade(self._config(alembic_ini, x, buffer), revisions, sql=True)
        return buffer.getvalue()

    def alembic_cli(self, *args: str, url: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the ``alembic`` command line as a deploy pipeline would (``DATABASE_URL``: ``url``, default this
        database's), on this database only (``python -m ghostsync.testing.guard``)."""
        env = dict(os.environ, DATABASE_URL=url or self.url())
        return subprocess.run(
            [sys.executable, "-m", "ghostsync.testing.guard", self.url(), str(self.alembic_ini), *args],
            env=env, capture_output=True, text=True, timeout=timeout,
        )

    def psql(self, script: str, *, user: str = MIGRATING_ROLE) -> subprocess.CompletedProcess[str]:
        """Apply ``script`` with psql as ``user``, stopping at the first error."""
        return subprocess.run(
            [self.server.psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(user)],
            input=script, capture_output=True, text=True, timeout=300,
        )

    def dispose(self) -> None:
        for engine in self._engines:
            engine.dispose()


def start_supabase_server(major: int, roles: str = DEFAULT_ROLE_SETUP) -> SupabaseServer:
    """Start a server of PostgreSQL ``major`` in role setup ``roles`` ("membership", "current" or
    "hosted", the default: today's hosted Supabase) with its Supabase-like template database."""
    if roles not in ROLE_SETUPS:
        raise ValueError(f"unknown role setup {roles!r}: expected one of {', '.join(ROLE_SETUPS)}")
    found = binaries.find(major)
    if found is None:
        raise RuntimeError(f"PostgreSQL {major} is not available on this machine")
    server = ThrowawayServer(found).start()
    try:
        make_cluster_supabase_like(server.url(), roles)
        supa = SupabaseServer(server, roles=roles)
        janitor = supa.janitor(TEMPLATE, as_template=True)
        janitor.init()
        make_database_supabase_like(server.url(TEMPLATE), roles)
    except BaseException:
        server.stop()
        raise
    return supa


class SupabaseServers:
    """Servers started on first use, one per (major, role setup), kept until ``stop_all()``.

        servers = SupabaseServers()
        with supabase_database(servers.get(17, "current")) as db: ...
        servers.stop_all()
    """

    def __init__(self) -> None:
        self._servers: dict[tuple[int, str], SupabaseServer] = {}

    def get(self, major: int, roles: str = DEFAULT_ROLE_SETUP) -> SupabaseServer:
        """The running server of PostgreSQL ``major`` in role setup ``roles``, started if need be."""
        key = (int(major), roles)
        if key not in self._servers:
            self._servers[key] = start_supabase_server(key[0], roles)
        return self._servers[key]

    def running(self) -> list[SupabaseServer]:
        return list(self._servers.values())

    def stop_all(self) -> None:
        """Stop every server started here (each one even if another fails to stop)."""
        errors: list[BaseException] = []
        while self._servers:
            _, supa = self._servers.popitem()
            try:
                supa.server.stop()
            except Exception as exc:  # stop the others, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


@contextmanager
def supabase_database(supa: SupabaseServer, alembic_ini: str | Path = DEFAULT_INI) -> Iterator[SupabaseDatabase]:
    """A fresh database cloned from ``supa``'s template, dropped on exit; its ``upgrade()`` runs the chain of
    ``alembic_ini`` (default: ghostsync's packaged chain)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    janitor = supa.janitor(name, template_dbname=supa.template)
    janitor.init()
    grant_database_privileges(supa.server.url(name))
    db = SupabaseDatabase(supa, name, Path(alembic_ini))
    try:
        yield db
    finally:
        db.dispose()
        janitor.drop()
