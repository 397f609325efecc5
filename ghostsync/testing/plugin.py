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
  template, dropped afterwards; ``supabase_db.upgrade()`` runs the chain of
  ``supabase_alembic_ini`` on it as the ``postgres`` role, through that
  configuration's env.py and on this database only (``ghostsync.testing.guard``:
  any connection elsewhere fails the test with one line, before anything runs
  there); ``supabase_db.auth()`` writes ``auth.users`` as the auth service does;
- ``supabase_alembic_ini`` (session): the Alembic configuration whose chain
  ``supabase_db`` runs: ``--ghostsync-alembic-config PATH``, else the ini setting
  ``ghostsync_alembic_config`` (relative to the ini file), else
  ``GHOSTSYNC_ALEMBIC_CONFIG``, else ghostsync's packaged chain alone (the
  default of every ghostsync command). A host names its ``alembic.ini`` to test
  its own revisions and app tables with ghostsync's.

Versions: ``--supabase-pg-versions=15,17`` (default: ``GHOSTSYNC_PG_VERSIONS``,
else ``15,17``, the majors Supabase runs). A version whose binaries this
machine lacks runs no test at all and is named in the report header and the
terminal summary; nothing is skipped in its name.

The plugin imports nothing heavy until a fixture is used, so installing
ghostsync without the extra never breaks a host's pytest run; a test that uses
a fixture without the extra stops the run with one line naming
``pip install 'ghostsync[testing]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ghostsync.testing.fixtures import SupabaseDatabase, SupabaseServer, SupabaseServers

DEFAULT_VERSIONS = "15,17"
CONFIG_OPTION = "--ghostsync-alembic-config"
CONFIG_INI = "ghostsync_alembic_config"
FIXTURES = ("supabase_pg_major", "supabase_servers", "supabase_server", "supabase_db")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ghostsync", "throwaway Supabase-like databases (ghostsync[testing])")
    group.addoption(
        "--supabase-pg-versions",
        default=os.environ.get("GHOSTSYNC_PG_VERSIONS", DEFAULT_VERSIONS),
        help="PostgreSQL major versions to run supabase_server on, comma-separated "
             f"(default: $GHOSTSYNC_PG_VERSIONS, else {DEFAULT_VERSIONS})",
    )
    group.addoption(
        CONFIG_OPTION, default=None, metavar="PATH",
        help="the alembic.ini whose chain supabase_db.upgrade() runs, e.g. the host's (default: the ini setting "
             f"{CONFIG_INI}, else $GHOSTSYNC_ALEMBIC_CONFIG, else ghostsync's packaged chain)",
    )
    parser.addini(CONFIG_INI, default="",
                  help="the alembic.ini whose chain supabase_db.upgrade() runs, relative to this ini file "
                       "(default: $GHOSTSYNC_ALEMBIC_CONFIG, else ghostsync's packaged chain)")


def alembic_ini(config: pytest.Config) -> Path:
    """The configuration supabase_db runs: the option, the ini setting, else what every ghostsync command
    reads (GHOSTSYNC_ALEMBIC_CONFIG, else the packaged chain). One line if it is not there."""
    from ghostsync import chain

    option = config.getoption(CONFIG_OPTION)
    setting = str(config.getini(CONFIG_INI) or "")
    if option:
        where, given = CONFIG_OPTION, Path(config.invocation_params.dir, option)
    elif setting:
        where = f"{CONFIG_INI} in {config.inipath}"
        given = (config.inipath.parent if config.inipath else config.rootpath) / setting
    elif os.environ.get(chain.CONFIG_ENV):
        where, given = chain.CONFIG_ENV, Path(os.environ[chain.CONFIG_ENV])
    else:
        return chain.DEFAULT_INI
    if not given.is_file():
        raise pytest.UsageError(f"{where}: no Alembic configuration at {given}")
    return given.resolve()


def require_extra() -> None:
    """One line, not an ImportError deep in a fixture, when the testing extra is missing."""
    try:
        import ghostsync.testing.fixtures  # noqa: F401
    except ModuleNotFoundError as exc:
        raise pytest.UsageError(
            f"ghostsync's fixtures need the testing extra (no module {exc.name!r}): pip install 'ghostsync[testing]'"
        ) from None


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


def pytest_configure(config: pytest.Config) -> None:
    # a configuration named for this run is checked before any test: one line, not an error per test
    if config.getoption(CONFIG_OPTION) or config.getini(CONFIG_INI):
        alembic_ini(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # after collection, so a missing extra ends the run with pytest's one ERROR line, not a collection traceback
    if any(name in getattr(item, "fixturenames", ()) for item in items for name in FIXTURES):
        require_extra()


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


@pytest.fixture(scope="session")
def supabase_alembic_ini(pytestconfig: pytest.Config) -> Path:
    try:
        return alembic_ini(pytestconfig)
    except pytest.UsageError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: one line, no chained traceback


@pytest.fixture
def supabase_db(supabase_server: SupabaseServer, supabase_alembic_ini: Path) -> Iterator[SupabaseDatabase]:
    from ghostsync.testing.fixtures import supabase_database

    with supabase_database(supabase_server, alembic_ini=supabase_alembic_ini) as database:
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
