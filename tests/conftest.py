"""The suite's throwaway databases: one Supabase-like server per PostgreSQL major version.

Versions come from GHOSTSYNC_PG_VERSIONS (default "15,17": the majors Supabase
runs). A version whose binaries this machine lacks runs no test at all and is
named in the report header and the summary; nothing is skipped in its name.
"""

from __future__ import annotations

import pytest

from ghostsync.throwaway import binaries
from ghostsync.throwaway.fixtures import (
    available_versions,
    requested_versions,
    supabase_database,
    supabase_server,
)

REQUESTED = requested_versions()
AVAILABLE, UNAVAILABLE = available_versions(REQUESTED)

if not AVAILABLE:
    raise pytest.UsageError(
        f"no PostgreSQL server binaries for any of {REQUESTED}: run `make test`, which provides them"
    )

pg = supabase_server(AVAILABLE)


@pytest.fixture
def db(pg):
    """A fresh Supabase-like database on each available PostgreSQL version."""
    with supabase_database(pg) as database:
        yield database


def _version_lines() -> list[str]:
    lines = []
    for major in REQUESTED:
        found = binaries.find(major)
        if found is None:
            lines.append(f"PostgreSQL {major}: NOT AVAILABLE on this machine; no test ran on it")
        else:
            lines.append(f"PostgreSQL {major}: {found.bindir} ({found.source})")
    return lines


def pytest_report_header(config: pytest.Config) -> list[str]:
    return _version_lines()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("PostgreSQL versions")
    for line in _version_lines():
        terminalreporter.write_line(line)


# --- reliability tests (test_under_load.py, test_faults.py, test_pooler.py) ---------------------
# --load-scale / GHOSTSYNC_LOAD_SCALE, the figures in the terminal summary, and PgBouncer's
# availability (its tests are deselected, and reported NOT AVAILABLE, when it is missing).
pytest_plugins = ["tests.reliability"]
