"""The suite's databases come from ghostsync's own pytest plugin (``ghostsync[testing]``).

``db`` is the plugin's ``supabase_db`` (a fresh Supabase-like database on each
available PostgreSQL version) and ``pg`` its ``supabase_server``: the suite
uses the same fixtures a host project gets. A module that sets
``ON_EVERY_ROLE_SETUP = True`` gets ``db`` on each role setup of Supabase
(``ghostsync.testing.supabase.ROLE_SETUPS``: the hosted one is ``supabase_db``,
the others come from ``supabase_servers``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ghostsync.testing.fixtures import supabase_database
from ghostsync.testing.plugin import available_versions
from ghostsync.testing.supabase import DEFAULT_ROLE_SETUP, ROLE_SETUPS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if getattr(metafunc.module, "ON_EVERY_ROLE_SETUP", False) and "db" in metafunc.fixturenames:
        metafunc.parametrize("db", ROLE_SETUPS, indirect=True)


@pytest.fixture
def db(request, pg, supabase_alembic_ini) -> Iterator:
    roles = getattr(request, "param", DEFAULT_ROLE_SETUP)
    if roles == DEFAULT_ROLE_SETUP:
        yield request.getfixturevalue("supabase_db")
        return
    server = request.getfixturevalue("supabase_servers").get(pg.major, roles)
    with supabase_database(server, alembic_ini=supabase_alembic_ini) as database:
        yield database


@pytest.fixture(scope="session")
def pg(supabase_server):
    return supabase_server


def pytest_configure(config: pytest.Config) -> None:
    available_versions(config)  # resolve once, so the header and summary name every version


# --- reliability tests (test_under_load.py, test_faults.py, test_pooler.py) ---------------------
# --load-scale / GHOSTSYNC_LOAD_SCALE, the figures in the terminal summary, and PgBouncer's
# availability (its tests are deselected, and reported NOT AVAILABLE, when it is missing).
pytest_plugins = ["tests.reliability"]
