"""pytest plugin of the reliability tests (test_under_load.py, test_faults.py, test_pooler.py).

- The size: ``--load-scale=ci`` (the default, fits CI) or ``--load-scale=large``;
  ``GHOSTSYNC_LOAD_SCALE`` sets the default (``GHOSTSYNC_LOAD_SCALE=large make test``).
- The figures each test records (signups attempted and failed, longest stall,
  ghosts left, ...) are printed in a section of the terminal summary, so they
  appear in ``make test`` output without ``-s``.
- PgBouncer: when this machine has no ``pgbouncer``, the pooler tests are
  deselected (not run, not counted as passed) and the summary says
  ``PgBouncer: NOT AVAILABLE``.
- Prometheus: tests marked ``prometheus`` need Debian's ``prometheus``,
  ``promtool`` and ``prometheus-node-exporter`` (``make test`` installs them);
  tests marked ``grafana_sdk`` need grafana-foundation-sdk. Where they are
  missing those tests are deselected likewise and the summary says
  ``Prometheus: NOT AVAILABLE`` / ``grafana-foundation-sdk: NOT AVAILABLE``.

Loaded by tests/conftest.py (``pytest_plugins``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import Any

import pytest

from ghostsync.migrations import settings
from ghostsync.testing import pgbouncer
from ghostsync.testing import prometheus as prometheus_tools
from ghostsync.testing.pgtap import pgtap_source


@dataclass(frozen=True)
class Scale:
    """How big the reliability tests are."""

    name: str
    members: int            # existing auth users whose profile the app wrote
    ghosts: int             # existing auth users without a profile
    clients: int            # concurrent signup clients
    max_signups: int        # bound per load phase
    deadline_s: float       # bound per load phase
    batch_size: int         # backfill batch size under load
    fault_ghosts: int       # ghosts in the fault tests
    fault_batch_size: int   # backfill batch size in the fault tests
    hold_s: float           # how long the long transaction holds its lock
    stall_margin_ms: int    # allowed on top of lock_timeout for scheduling on a busy machine

    @property
    def lock_timeout_ms(self) -> int:
        """ghostsync's default lock budget: every migration under load runs with the defaults."""
        budget = settings.parse_duration(settings.SETTINGS["lock_timeout"].default)
        return round(budget.total_seconds() * 1000)


SCALES = {
    "ci": Scale("ci", members=15_000, ghosts=5_000, clients=4, max_signups=20_000, deadline_s=120,
                batch_size=500, fault_ghosts=20_000, fault_batch_size=100,
                hold_s=2.0, stall_margin_ms=500),
    "large": Scale("large", members=200_000, ghosts=50_000, clients=8, max_signups=200_000, deadline_s=600,
                   batch_size=5_000, fault_ghosts=200_000, fault_batch_size=500,
                   hold_s=8.0, stall_margin_ms=500),
}

FIGURES: list[str] = []
POOLER_TESTS = "test_pooler.py"
_deselected_pooler_tests: list[str] = []
_deselected_by_marker: dict[str, list[str]] = {"prometheus": [], "grafana_sdk": [], "pgtap": []}
MARKERS = {
    "prometheus": "needs Debian's prometheus, promtool and prometheus-node-exporter (make test installs them)",
    "grafana_sdk": "needs grafana-foundation-sdk (pip install grafana-foundation-sdk)",
    "pgtap": "needs pg_prove and pgTAP (make pgtap installs Debian's postgresql-15-pgtap and "
             "libtap-parser-sourcehandler-pgtap-perl)",
}


def record(line: str) -> None:
    """Keep one line of figures for the terminal summary."""
    FIGURES.append(line)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--load-scale", choices=sorted(SCALES), default=os.environ.get("GHOSTSYNC_LOAD_SCALE", "ci"),
        help="size of the load and fault tests (default: $GHOSTSYNC_LOAD_SCALE or ci)",
    )


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    return SCALES[request.config.getoption("--load-scale")]


def _pgbouncer_line() -> str:
    binary = pgbouncer.find()
    if binary is None:
        return "PgBouncer: NOT AVAILABLE on this machine; the pooler tests were not run"
    return f"PgBouncer: {binary} ({pgbouncer.version(binary) or 'unknown version'})"


def _grafana_sdk_line() -> str:
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        return ("grafana-foundation-sdk: NOT AVAILABLE (pip install grafana-foundation-sdk); the dashboard's "
                "build was not checked")
    from importlib.metadata import version

    return f"grafana-foundation-sdk: {version('grafana-foundation-sdk')}"


def _pgtap_available() -> bool:
    override = os.environ.get("GHOSTSYNC_PG_PROVE")
    prove = (override if os.access(override, os.X_OK) else None) if override else shutil.which("pg_prove")
    return prove is not None and pgtap_source() is not None


def _pgtap_line() -> str:
    if _pgtap_available():
        return f"pgTAP: {pgtap_source()}, pg_prove {shutil.which('pg_prove')}"
    return "pgTAP: NOT AVAILABLE (make pgtap); the pgTAP tests were not run"


def _available(marker: str) -> bool:
    if marker == "prometheus":
        return not prometheus_tools.missing()
    if marker == "pgtap":
        return _pgtap_available()
    return importlib.util.find_spec("grafana_foundation_sdk") is not None


def pytest_configure(config: pytest.Config) -> None:
    for marker, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {help_text}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [_pgbouncer_line(), prometheus_tools.availability_line(), _grafana_sdk_line(), _pgtap_line(),
            f"load scale: {config.getoption('--load-scale')}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = {marker for marker in MARKERS if not _available(marker)}
    no_pooler = pgbouncer.find() is None
    keep, drop = [], []
    for item in items:
        if no_pooler and item.path.name == POOLER_TESTS:
            _deselected_pooler_tests.append(item.nodeid)
            drop.append(item)
            continue
        lacking = [m for m in missing if item.get_closest_marker(m) is not None]
        if lacking:
            _deselected_by_marker[lacking[0]].append(item.nodeid)
            drop.append(item)
            continue
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if FIGURES:
        terminalreporter.section(f"ghostsync under load and faults (scale {config.getoption('--load-scale')})")
        for line in FIGURES:
            terminalreporter.write_line(line)
    terminalreporter.section("PgBouncer")
    line = _pgbouncer_line()
    if _deselected_pooler_tests:
        line += f" ({len(_deselected_pooler_tests)} deselected)"
    terminalreporter.write_line(line)
    terminalreporter.section("Prometheus and Grafana")
    for marker, line in (("prometheus", prometheus_tools.availability_line()), ("grafana_sdk", _grafana_sdk_line()),
                         ("pgtap", _pgtap_line())):
        if _deselected_by_marker[marker]:
            line += f" ({len(_deselected_by_marker[marker])} test(s) deselected)"
        terminalreporter.write_line(line)
