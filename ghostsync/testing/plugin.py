"""The ``ghostsync[testing]`` pytest plugin: throwaway Supabase-like databases as fixtures.

Registered through the ``pytest11`` entry point, so a host project that
installs ``ghostsync[testing]`` gets the fixtures without any conftest:

- ``supabase_server`` (session): one Supabase-like server per PostgreSQL major
  version in the "hosted" role setup (today's hosted Supabase), parametrized
  (ids ``pg15``, ``pg17``);
- ``supabase_servers`` (session): ``.get(major, roles)`` starts (once) and returns
  the server of a major version in any role setup ("membership", "current",
  "hosted"); every server it started stops at the end of the session:
  ``with supabase_database(supabase_servers.get(pg.major, "current")) as db: ...``;
- ``supabase_db`` (function): a fresh database cloned from that server's
  template, dropped afterwards; ``supabase_db.upgrade()`` runs ghostsync's
  chain on it as the ``postgres`` role, ``supabase_db.auth()`` writes
  ``auth.users`` as the auth service does.

Versions: ``--supabase-pg-versions=15,17`` (default: ``GHOSTSYNC_PG_VERSIONS``,
else ``15,17``, the majors Supabase runs). A version whose binaries this
machine lacks runs no test at all and is named in the report header and the
terminal summary; nothing is skipped in its name.

The plugin imports nothing heavy until a fixture is used, so installing
ghostsync without the extra never breaks a host's pytest run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ghostsync.testing.fixtures import SupabaseDatabase, SupabaseServer, SupabaseServers

DEFAULT_VERSIONS = "15,17"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ghostsync", "throwaway Supabase-like databases (ghostsync[testing])")
    group.addoption(
        "--supabase-pg-versions",
        default=os.environ.get("GHOSTSYNC_PG_VERSIONS", DEFAULT_VERSIONS),
        help="PostgreSQL major versions to run supabase_server on, comma-separated "
             f"(default: $GHOSTSYNC_PG_VERSIONS, else {DEFAULT_VERSIONS})",
    )


def requested_versions(config: pytest.Config) -> list[int]:
    raw = str(config.getoption("--supabase-pg-versions"))
    try:
        return [int(v) for v in raw.replace(" ", "").split(",") if v]
    except ValueError:
        raise pytest.UsageError(f"--supabase-pg-versions: {raw!r} is not a list of major versions like 15,17") from None


def _availability(config: pytest.Config) -> list[tuple[int, str | None]]:
    """(major, where its binaries are) for each requested version; None when unavailable."""
    cached = getattr(config, "_ghostsync_versions", None)
    if cached is None:
        from ghostsync.testing import binaries

        cached = []
        for major in requested_versions(config):
            found = binaries.find(major)
            cached.append((major, f"{found.bindir} ({found.source})" if found else None))
        config._ghostsync_versions = cached  # type: ignore[attr-defined]
    return list(cached)


def available_versions(config: pytest.Config) -> list[int]:
    return [major for major, where in _availability(config) if where is not None]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "supabase_pg_major" in metafunc.fixturenames:
        versions = available_versions(metafunc.config)
        if not versions:
            raise pytest.UsageError(
                "no PostgreSQL server binaries for any of "
                f"{requested_versions(metafunc.config)}: install ghostsync[testing] (PostgreSQL 17) "
                "or set GHOSTSYNC_PG<major>_BINDIR"
            )
        metafunc.parametrize("supabase_pg_major", versions, ids=[f"pg{v}" for v in versions],
                             indirect=True, scope="session")


@pytest.fixture(scope="session")
def supabase_pg_major(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="session")
def supabase_servers() -> Iterator[SupabaseServers]:
    from ghostsync.testing.fixtures import SupabaseServers

    servers = SupabaseServers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def supabase_server(supabase_pg_major: int, supabase_servers: SupabaseServers) -> SupabaseServer:
    return supabase_servers.get(supabase_pg_major, "hosted")


@pytest.fixture
def supabase_db(supabase_server: SupabaseServer) -> Iterator[SupabaseDatabase]:
    from ghostsync.testing.fixtures import supabase_database

    with supabase_database(supabase_server) as database:
        yield database


def _version_lines(config: pytest.Config) -> list[str]:
    lines = []
    for major, where in _availability(config):
        if where is None:
            lines.append(f"PostgreSQL {major}: NOT AVAILABLE on this machine; no test ran on it")
        else:
            lines.append(f"PostgreSQL {major}: {where}")
    return lines


def pytest_report_header(config: pytest.Config) -> list[str]:
    return _version_lines(config) if _used(config) else []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not _used(config):
        return
    terminalreporter.section("PostgreSQL versions")
    for line in _version_lines(config):
        terminalreporter.write_line(line)


def _used(config: pytest.Config) -> bool:
    """Report versions only in runs that use the fixtures (or ask for versions explicitly)."""
    return bool(getattr(config, "_ghostsync_versions", None)) or config.getoption(
        "--supabase-pg-versions") != DEFAULT_VERSIONS or "GHOSTSYNC_PG_VERSIONS" in os.environ
