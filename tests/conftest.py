"""The suite's databases come from ghostsync's own pytest plugin (``ghostsync[testing]``).

``db`` is the plugin's ``supabase_db`` (a fresh Supabase-like database on each
available PostgreSQL version) and ``pg`` its ``supabase_server``: the suite
uses the same fixtures a host project gets.
"""

from __future__ import annotations

import pytest

from ghostsync.testing.plugin import available_versions


@pytest.fixture
def db(supabase_db):
    return supabase_db


@pytest.fixture(scope="session")
def pg(supabase_server):
    return supabase_server


def pytest_configure(config: pytest.Config) -> None:
    available_versions(config)  # resolve once, so the header and summary name every version


# --- reliability tests (test_under_load.py, test_faults.py, test_pooler.py) ---------------------
# --load-scale / GHOSTSYNC_LOAD_SCALE, the figures in the terminal summary, and PgBouncer's
# availability (its tests are deselected, and reported NOT AVAILABLE, when it is missing).
pytest_plugins = ["tests.reliability"]
