"""Monitoring that cannot lie, alert rules and a dashboard, tested on the real thing.

Part one needs only PostgreSQL: the Prometheus textfile ``ghostsync status
--prometheus FILE.prom`` writes is written atomically in every case (the check
ran, the database was unreachable, a privilege was missing) with
``ghostsync_up`` and ``ghostsync_last_success_timestamp_seconds``;
``status --json`` on exit 2 prints the failure object; ``--quick`` and the
full check emit the same JSON keys and metric names under ``check="quick"`` /
``check="full"``; counters end in ``_total``; the dashboard figures (auth users
and profiles, signups, failed profile writes, trigger execution time) are
there and right.

Part two (marker ``prometheus``) needs Debian's ``prometheus`` (and its
``promtool``) and ``prometheus-node-exporter``, which ``make test`` installs
(and stops their services) as it does PgBouncer: ``promtool check rules`` and
``promtool test rules`` on ``monitoring/``; then node_exporter's textfile
collector reads the files ghostsync writes and a real Prometheus on 127.0.0.1
scrapes it every second and evaluates ``monitoring/ghostsync.rules.yml``: an
alert fires when a ghost appears and clears after ``ghostsync repair``, every
alert's expression returns a ghostsync series in the state it is written for,
and every dashboard panel's query returns a ghostsync series. Where the tools
are missing these tests are deselected and the summary says ``Prometheus: NOT
AVAILABLE`` (tests/reliability.py); the dashboard's build (marker
``grafana_sdk``) likewise needs grafana-foundation-sdk.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghostsync import report
from ghostsync.testing import prometheus as promharness
from ghostsync.testing.server import _free_port
from ghostsync.testing.supabase import APP_KEYED_ROWS_SQL, DEFER_KEYED_ROWS_KEY_SQL
from tests import reliability
from tests.paths import REPO
from tests.seeding import ghostsync_cli

MONITORING = REPO / "monitoring"
RULES = MONITORING / "ghostsync.rules.yml"
RULE_TESTS = MONITORING / "ghostsync.rules.test.yml"
DASHBOARD = MONITORING / "ghostsync-dashboard.json"
RESTORED_GHOST = ("SET session_replication_role = replica; INSERT INTO auth.users (instance_id, id, aud, role, email, "
                  "created_at, updated_at) VALUES ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', "
                  "'authenticated', %s, now(), now())")


# -- helpers -------------------------------------------------------------------------------------------

def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a textfile: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(path: Path, name: str, **labels: str) -> float:
    wanted = [v for (n, lab), v in samples(path).items() if n == name and all(dict(lab).get(k) == x
                                                                             for k, x in labels.items())]
    assert len(wanted) == 1, (name, labels, wanted)
    return wanted[0]


def names_in(path: Path) -> set[str]:
    return {name for name, _ in samples(path)}


def families(path: Path) -> dict[str, str]:
    """Metric family name -> type, as the exposition declares them."""
    return {f.name: f.type for f in text_string_to_metric_families(path.read_text())}


def unreachable_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres"


def status(db: Any, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return ghostsync_cli(db, "status", *args, url=url, timeout=120)


def installed(db: Any) -> Any:
    with db.auth() as auth:
        for n in range(3):
            auth.signup_email(f"member{n}-{uuid.uuid4().hex[:6]}@example.com", autoconfirm=True, session=False)
    db.upgrade()
    return db


# -- part one: the textfile and the JSON -----------------------------------------------------------------

def test_textfile_when_the_database_is_unreachable(db, tmp_path):
    """A check that could not run still rewrites the file: up 0, the last success kept, nothing stale left."""
    installed(db)
    target = tmp_path / "ghostsync-full.prom"
    ok = status(db, "--prometheus", str(target))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert value(target, "ghostsync_up", check="full") == 1
    assert value(target, "ghostsync_healthy", check="full") == 1
    succeeded_at = value(target, "ghostsync_last_success_timestamp_seconds", check="full")
    assert abs(succeeded_at - time.time()) < 120
    inode = target.stat().st_ino

    down = status(db, "--json", "--prometheus", str(target), url=unreachable_url())
    assert down.returncode == 2
    assert down.stderr.count("\n") == 1 and "connection refused" in down.stderr.lower(), down.stderr
    failure = json.loads(down.stdout)
    assert failure["schema_version"] == 2 and failure["up"] is False
    assert "connection refused" in failure["error"]["message"].lower()
    assert target.stat().st_ino != inode, "the file was replaced (renamed over), not edited in place"
    assert value(target, "ghostsync_up", check="full") == 0
    assert value(target, "ghostsync_last_success_timestamp_seconds", check="full") == succeeded_at
    assert value(target, "ghostsync_check_error", check="full", code=failure["error"]["code"]) == 1
    left = names_in(target)
    assert "ghostsync_healthy" not in left and "ghostsync_ghosts" not in left, \
        "nothing of the last successful check may outlive a check that could not run"
    assert not [p for p in tmp_path.iterdir() if p != target], "no temporary file left beside it"

    # failing again keeps the same last success; succeeding again moves it on
    status(db, "--prometheus", str(target), url=unreachable_url())
    assert value(target, "ghostsync_last_success_timestamp_seconds", check="full") == succeeded_at
    assert status(db, "--prometheus", str(target)).returncode == 0
    assert value(target, "ghostsync_last_success_timestamp_seconds", check="full") > succeeded_at
    # a stable code for "could not connect" (not SQLAlchemy's documentation code of the exception)
    assert failure["error"]["code"] == "unreachable", failure


def test_textfile_when_a_privilege_is_missing(db, tmp_path):
    """A role that may connect but not read what status reads: up 0, and last success 0 (no check ever ran)."""
    installed(db)
    db.sql("CREATE ROLE monitoring_without_grants LOGIN")
    target = tmp_path / "ghostsync-quick.prom"
    proc = status(db, "--quick", "--json", "--prometheus", str(target), url=db.url("monitoring_without_grants"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    failure = json.loads(proc.stdout)
    assert (failure["schema_version"], failure["up"], failure["check"]) == (2, False, "quick")
    assert set(failure["error"]) == {"code", "message"} and failure["error"]["message"] in proc.stderr
    assert value(target, "ghostsync_up", check="quick") == 0
    assert value(target, "ghostsync_last_success_timestamp_seconds", check="quick") == 0
    assert value(target, "ghostsync_check_error", check="quick", code=failure["error"]["code"]) == 1
    assert failure["error"]["code"] == "missing_privilege", failure


def test_a_role_that_row_level_security_blinds_cannot_report_healthy(db, tmp_path):
    """auth.users and public.users have RLS on. A monitoring role that may read them but is subject to
    RLS (pg_read_all_data without BYPASSRLS) would count 0 auth users and 0 ghosts: the check must fail
    (exit 2, up 0) instead of reporting HEALTHY."""
    installed(db)
    db.sql("CREATE ROLE monitoring_reader LOGIN; GRANT pg_read_all_data TO monitoring_reader; "
           "GRANT USAGE ON SCHEMA ghostsync, auth TO monitoring_reader")
    # a host project's version table may have no RLS; ghostsync's own tables do
    db.sql("ALTER TABLE public.alembic_version DISABLE ROW LEVEL SECURITY")
    db.sql(RESTORED_GHOST, (str(uuid.uuid4()), "restored@example.com"))
    as_owner = status(db)
    assert as_owner.returncode == 1 and "ghosts            1" in as_owner.stdout, as_owner.stdout
    target = tmp_path / "ghostsync-full.prom"
    blinded = status(db, "--prometheus", str(target), url=db.url("monitoring_reader"))
    assert "HEALTHY" not in blinded.stdout, f"a role RLS hides rows from reported: {blinded.stdout}"
    assert blinded.returncode == 2 and "row-level security" in blinded.stderr, blinded.stdout + blinded.stderr
    assert value(target, "ghostsync_up", check="full") == 0


def test_textfile_is_replaced_atomically_or_left_alone(tmp_path, monkeypatch):
    """The new content goes to a temporary file in the same folder (not ending in .prom, so the collector
    never reads it) and is renamed over the old one; if anything fails the old file stays as it was."""
    target = tmp_path / "ghostsync.prom"
    report.write_atomically(target, b"ghostsync_up 1\n")
    assert target.read_bytes() == b"ghostsync_up 1\n" and oct(target.stat().st_mode & 0o777) == "0o644"
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: Any) -> None:
        seen.append(Path(src).name)
        assert Path(src).parent == tmp_path and not Path(src).name.endswith(".prom")
        assert Path(src).read_bytes() == b"ghostsync_up 0\n", "complete before the rename"
        assert target.read_bytes() == b"ghostsync_up 1\n", "the old file is intact until the rename"
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    report.write_atomically(target, b"ghostsync_up 0\n")
    assert len(seen) == 1 and target.read_bytes() == b"ghostsync_up 0\n"

    def broken(src: str, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        report.write_atomically(target, b"ghostsync_up 1\n")
    assert target.read_bytes() == b"ghostsync_up 0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ghostsync.prom"], "the temporary file is removed"


def test_textfile_name_must_end_in_prom(db, tmp_path):
    installed(db)
    for name in ("ghostsync.txt", "ghostsync.prom.tmp", "ghostsync"):
        proc = status(db, "--prometheus", str(tmp_path / name))
        assert proc.returncode == 2, (name, proc.stdout)
        assert proc.stderr.count("\n") == 1 and "ending in .prom" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_quick_and_full_share_keys_and_metric_names(db, tmp_path):
    """Both cadences write files side by side: the same JSON keys, the same metric names and types,
    told apart by the label check; counters end in _total; what quick does not compute is null / NaN."""
    installed(db)
    full_file, quick_file = tmp_path / "ghostsync-full.prom", tmp_path / "ghostsync-quick.prom"
    full = status(db, "--json", "--prometheus", str(full_file))
    quick = status(db, "--json", "--quick", "--prometheus", str(quick_file))
    assert full.returncode == quick.returncode == 0, full.stderr + quick.stderr
    full_json, quick_json = json.loads(full.stdout), json.loads(quick.stdout)
    assert set(full_json) == set(quick_json) and set(full_json["counters"]) == set(quick_json["counters"])
    assert (full_json["check"], quick_json["check"]) == ("full", "quick")
    for key in ("ghosts", "orphans", "stale_profiles", "auth_users", "profiles"):
        assert isinstance(full_json[key], int) and quick_json[key] is None, key
    assert families(full_file) == families(quick_file), "same names and types in both files"
    full_names = names_in(full_file)
    assert full_names == names_in(quick_file)
    for path, check in ((full_file, "full"), (quick_file, "quick")):
        assert {dict(labels).get("check") for _, labels in samples(path)} == {check}
    counters = {name for name, kind in families(full_file).items() if kind == "counter"}
    assert counters >= {"ghostsync_auth_users_inserted", "ghostsync_failed_profile_writes"}
    assert all(name.endswith("_total") for name in full_names if name.removesuffix("_total") in counters)
    assert not any(name.endswith("_total") for name in full_names if name.removesuffix("_total") not in counters)
    assert set(report.METRICS) >= full_names, full_names - set(report.METRICS)
    assert math.isnan(value(quick_file, "ghostsync_ghosts", check="quick"))
    assert math.isnan(value(quick_file, "ghostsync_problem", check="quick", code="ghosts"))
    assert value(full_file, "ghostsync_ghosts", check="full") == 0
    assert value(full_file, "ghostsync_problem", check="full", code="ghosts") == 0
    assert value(quick_file, "ghostsync_problem", check="quick", code="trigger_disabled") == 0


def test_dashboard_figures(db, tmp_path):
    """Auth users and profiles; signups per interval and failed profile writes from counters that
    only grow (pg_stat_user_tables: repair clears the ledger, the counter stays); trigger execution
    time from pg_stat_user_functions where track_functions is on, and said to be off where it is off."""
    installed(db)
    target = tmp_path / "ghostsync-quick.prom"
    proc = status(db, "--prometheus", str(target))
    assert proc.returncode == 0
    assert "trigger time      not tracked (track_functions = none" in proc.stdout, proc.stdout
    assert value(target, "ghostsync_trigger_timing_tracked", check="full", setting="none") == 0
    assert "ghostsync_trigger_calls_total" not in names_in(target)
    users = db.value("SELECT count(*) FROM auth.users")
    assert value(target, "ghostsync_auth_users", check="full") == users
    assert value(target, "ghostsync_profiles", check="full") == db.value("SELECT count(*) FROM public.users")
    signups_before = value(target, "ghostsync_auth_users_inserted_total", check="full")
    failed_before = value(target, "ghostsync_failed_profile_writes_total", check="full")

    db.sql(f"ALTER DATABASE {db.name} SET track_functions = 'pl'")
    # a profile write that fails: the app's CHECK on its profile table refuses these emails
    db.sql("ALTER TABLE public.users ADD CONSTRAINT no_blocked_emails CHECK (email NOT LIKE 'blocked-%%')",
           user="postgres")
    with db.auth() as auth:
        for n in range(5):
            auth.signup_email(f"fine{n}-{uuid.uuid4().hex[:6]}@example.com", autoconfirm=True, session=False)
        for n in range(2):
            auth.signup_email(f"blocked-{n}-{uuid.uuid4().hex[:6]}@example.com", session=False)
    # every backend reports its statistics when its transaction ends (at most ~1 s later when busy)
    proc = _wait_for_counters(db, target, signups_before + 7)
    assert proc.returncode == 1, proc.stdout  # the two failed syncs (and their ghosts) are problems
    assert value(target, "ghostsync_auth_users_inserted_total", check="full") == signups_before + 7
    assert value(target, "ghostsync_failed_profile_writes_total", check="full") == failed_before + 2
    assert value(target, "ghostsync_failed_syncs", check="full") == 2
    assert value(target, "ghostsync_auth_users", check="full") == users + 7
    assert value(target, "ghostsync_profiles", check="full") == users + 5
    assert value(target, "ghostsync_trigger_timing_tracked", check="full", setting="pl") == 1
    calls = value(target, "ghostsync_trigger_calls_total", check="full")
    assert calls >= 7, "each signup called ghostsync's functions (INSERT, then the confirming UPDATE)"
    assert value(target, "ghostsync_trigger_seconds_total", check="full") > 0
    assert re.search(r"trigger time      [\d.]+ ms in \d+ call\(s\) of ghostsync's functions, [\d.]+ ms per call",
                     proc.stdout), proc.stdout

    db.sql("ALTER TABLE public.users DROP CONSTRAINT no_blocked_emails", user="postgres")
    repaired = ghostsync_cli(db, "repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    proc = status(db, "--prometheus", str(target))
    assert proc.returncode == 0, proc.stdout
    assert value(target, "ghostsync_failed_syncs", check="full") == 0
    assert value(target, "ghostsync_failed_profile_writes_total", check="full") == failed_before + 2, \
        "a counter never goes down: repair cleared the ledger, not the count of failures"


def _wait_for_counters(db: Any, target: Path, signups: float, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        proc = status(db, "--prometheus", str(target))
        if value(target, "ghostsync_auth_users_inserted_total", check="full") >= signups \
                or time.monotonic() > deadline:
            return proc
        time.sleep(0.5)


# -- part two: the rules and the dashboard on the real tools ---------------------------------------------

@pytest.mark.prometheus
def test_promtool_checks_and_unit_tests_the_rules():
    checked = promharness.promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"SUCCESS: \d+ rules found", checked.stdout), checked.stdout
    tested = promharness.promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    reliability.record(f"promtool: {checked.stdout.strip().splitlines()[-1].strip()}; rule unit tests: "
                       f"{len(re.findall(r'^  - name:', RULE_TESTS.read_text(), re.MULTILINE))} passed")


@pytest.mark.grafana_sdk
def test_dashboard_is_what_the_sdk_builds():
    proc = subprocess.run([sys.executable, str(MONITORING / "dashboard.py"), "--check"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = json.loads(DASHBOARD.read_text())
    titles = [panel["title"] for panel in board["panels"]]
    for wanted in ("Ghost users", "Auth users vs profiles", "Registration success rate", "Trigger execution time"):
        assert wanted in titles, titles
    assert all(target["expr"] for panel in board["panels"] for target in panel["targets"])


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]


def grafana_to_promql(expr: str, check: str, window: str = "20s") -> str:
    """What Grafana sends for a panel's query: its variables substituted."""
    return expr.replace("$check", check).replace("$__rate_interval", window)


@pytest.fixture(scope="module")
def stack():
    """node_exporter's textfile collector and a Prometheus scraping it every second, with the rules."""
    exporter = promharness.ThrowawayNodeExporter().start()
    try:
        server = promharness.ThrowawayPrometheus([exporter.address], [RULES]).start()
        try:
            assert server.wait_for_targets(), "Prometheus never scraped node_exporter"
            yield exporter, server
        finally:
            server.stop()
    finally:
        exporter.stop()


class Watch:
    """Runs the checks into node_exporter's folder and waits (bounded) for Prometheus to see them."""

    def __init__(self, db: Any, exporter: Any, server: Any) -> None:
        self.db, self.exporter, self.server = db, exporter, server
        self.dir = exporter.textfile_dir
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def path(self, check: str) -> Path:
        return self.dir / f"ghostsync-{check}.prom"

    def check(self, *checks: str, url: str | None = None) -> None:
        for check in checks:
            args = ["--prometheus", str(self.path(check))] + (["--quick"] if check == "quick" else [])
            proc = status(self.db, *args, url=url)
            assert proc.returncode in ((0, 1) if url is None else (2,)), proc.stdout + proc.stderr

    def scraped(self, check: str, since: float, timeout: float = 30) -> None:
        """Wait until Prometheus holds a check= ``check`` sample scraped after ``since``."""
        def fresh() -> bool:
            found = self.server.query(f'timestamp(ghostsync_check_duration_seconds{{check="{check}"}})')
            return bool(found) and float(found[0]["value"][1]) > since

        assert promharness.wait_until(fresh, timeout, 0.2), f"Prometheus never scraped the {check} textfile"

    def run(self, *checks: str, url: str | None = None) -> None:
        """Run the checks, then wait until Prometheus has scraped what they wrote (a scrape that
        begins after the last file was renamed into place)."""
        self.check(*checks, url=url)
        written = time.time()
        for check in checks:
            self.scraped(check, written)

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.server.query(expr)

    def until(self, expr: str, present: bool = True, timeout: float = 30) -> list[dict[str, Any]]:
        found = promharness.wait_until(lambda: bool(self.query(expr)) == present, timeout, 0.25)
        assert found, f"{expr!r} {'never returned' if present else 'still returns'} a series"
        return self.query(expr)

    def alert(self, name: str, state: str = "firing", timeout: float = 30) -> list[dict[str, Any]]:
        found = promharness.wait_until(
            lambda: [a for a in self.server.alerts() if a["labels"]["alertname"] == name and a["state"] == state],
            timeout, 0.25)
        assert found, f"alert {name} never became {state}: {self.server.alerts()}"
        return list(found)

    def gone(self, name: str, timeout: float = 30) -> None:
        assert promharness.wait_until(
            lambda: not [a for a in self.server.alerts() if a["labels"]["alertname"] == name], timeout, 0.25), \
            f"alert {name} is still active: {self.server.alerts()}"

    def evaluate_rule(self, name: str) -> list[dict[str, Any]]:
        """Evaluate the expression Prometheus loaded for rule ``name`` now; remember what it returned."""
        rule = next(r for r in self.server.rules() if r["name"] == name)
        result = self.query(rule["query"])
        if result:
            self.seen.setdefault(name, result)
        return result


def ghostsync_series(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples that come from ghostsync's textfiles (every ghostsync series carries the label check)."""
    return [s for s in result if "check" in s["metric"] and s["metric"].get("job") == "node"]


@pytest.mark.prometheus
def test_alerts_and_dashboard_on_a_real_prometheus(db, stack, tmp_path):
    exporter, server = stack
    for old in exporter.textfile_dir.glob("*.prom"):
        old.unlink()
    installed(db)
    db.sql(f"ALTER DATABASE {db.name} SET track_functions = 'pl'")
    watch = Watch(db, exporter, server)

    # ordinary traffic, both checks running: every dashboard panel's query returns ghostsync series
    with db.auth() as auth:
        for round_ in range(6):
            for n in range(3):
                auth.signup_email(f"t{round_}-{n}-{uuid.uuid4().hex[:6]}@example.com", autoconfirm=True,
                                  session=False)
            watch.run("quick", "full")
            time.sleep(0.5)
    scrape_errors = server.query("node_textfile_scrape_error")
    assert scrape_errors and all(s["value"][1] == "0" for s in scrape_errors), scrape_errors
    for check in ("quick", "full"):
        for title, expr in dashboard_queries():
            promql = grafana_to_promql(expr, check)
            found = ghostsync_series(watch.query(promql))
            assert found, f"panel {title!r}: {promql!r} returned no ghostsync series (check={check})"
            assert any(math.isfinite(float(s["value"][1])) for s in found), (title, promql, found)
    mean = ghostsync_series(watch.query(grafana_to_promql(next(
        e for t, e in dashboard_queries() if t == "Trigger execution time"), "quick")))
    signups = watch.query(grafana_to_promql('increase(ghostsync_auth_users_inserted_total{check="$check"}[1m])',
                                            "quick"))
    assert float(signups[0]["value"][1]) > 0 and float(mean[0]["value"][1]) > 0
    assert not [a for a in server.alerts() if a["state"] == "firing"], server.alerts()
    watch.evaluate_rule("ghostsync:check_is_latest")

    # a ghost appears (restored with triggers off): the alert fires; `ghostsync repair` clears it
    ghost = str(uuid.uuid4())
    db.sql(RESTORED_GHOST, (ghost, f"restored-{ghost[:8]}@example.com"))
    watch.run("full")
    fired = watch.alert("GhostsyncGhostUsers")
    assert fired[0]["labels"]["check"] == "full" and float(fired[0]["value"]) == 1
    assert fired[0]["annotations"]["summary"].startswith("1 auth user(s) without a profile")
    assert watch.evaluate_rule("GhostsyncGhostUsers")
    repaired = ghostsync_cli(db, "repair")
    assert repaired.returncode == 0 and "1 ghost(s) backfilled" in repaired.stdout, repaired.stdout
    watch.run("full")
    watch.gone("GhostsyncGhostUsers")
    reliability.record(f"pg{db.owner.major} Prometheus {server.address}: GhostsyncGhostUsers fired for a restored "
                       "ghost and cleared after `ghostsync repair`")

    # failed profile writes: the app's CHECK refuses an email; the signup goes through
    db.sql("ALTER TABLE public.users ADD CONSTRAINT no_blocked CHECK (email NOT LIKE 'blocked-%%')", user="postgres")
    with db.auth() as auth:
        auth.signup_email(f"blocked-{uuid.uuid4().hex[:6]}@example.com", session=False)
    watch.run("quick", "full")
    watch.alert("GhostsyncFailedProfileWrites")
    assert watch.evaluate_rule("GhostsyncFailedProfileWrites")
    db.sql("ALTER TABLE public.users DROP CONSTRAINT no_blocked", user="postgres")
    assert ghostsync_cli(db, "repair").returncode == 0
    watch.run("quick", "full")
    watch.gone("GhostsyncFailedProfileWrites")
    watch.gone("GhostsyncGhostUsers")

    # the update sync (a constraint trigger from ghostsync_0010) disabled (a restore left it so), then missing,
    # then redefined by hand
    definition = db.value("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = "
                          "'zz_ghostsync_on_auth_user_updated' AND tgrelid = 'auth.users'::regclass")
    db.sql("ALTER TABLE auth.users DISABLE TRIGGER zz_ghostsync_on_auth_user_updated")
    watch.run("quick")
    watch.alert("GhostsyncTriggerDisabled")
    assert watch.evaluate_rule("GhostsyncTriggerDisabled")
    db.sql("DROP TRIGGER zz_ghostsync_on_auth_user_updated ON auth.users")
    watch.run("quick")
    watch.alert("GhostsyncTriggerMissing")
    assert watch.evaluate_rule("GhostsyncTriggerMissing")
    redefined = definition.replace(" ON auth.users ", " OF email ON auth.users ", 1)  # fires on fewer updates
    assert redefined != definition
    db.sql(redefined)
    watch.run("quick")
    watch.alert("GhostsyncTriggerDrift")
    assert watch.evaluate_rule("GhostsyncTriggerDrift")
    db.sql("DROP TRIGGER zz_ghostsync_on_auth_user_updated ON auth.users; " + definition)
    # a function edited in the SQL editor
    source = db.value("SELECT pg_get_functiondef('ghostsync.handle_new_user()'::regprocedure)")
    db.sql(source.replace("RETURN NEW;", "RETURN NEW; -- edited by hand"), user="postgres")
    watch.run("quick")
    watch.alert("GhostsyncFunctionDrift")
    assert watch.evaluate_rule("GhostsyncFunctionDrift")
    db.sql(source, user="postgres")
    # the auth service's sessions in replica mode (a setting of its role in this database)
    db.sql(f"ALTER ROLE supabase_auth_admin IN DATABASE {db.name} SET session_replication_role = replica")
    watch.run("quick")
    watch.alert("GhostsyncAuthSkipsTriggers")
    assert watch.evaluate_rule("GhostsyncAuthSkipsTriggers")
    db.sql(f"ALTER ROLE supabase_auth_admin IN DATABASE {db.name} RESET session_replication_role")
    # an app trigger inserting rows whose key to public.users is checked before the profile is written
    db.sql(APP_KEYED_ROWS_SQL, user="postgres")
    watch.run("quick")
    watch.alert("GhostsyncSignupsFailOnAppKey")
    assert watch.evaluate_rule("GhostsyncSignupsFailOnAppKey")
    db.sql(DEFER_KEYED_ROWS_KEY_SQL, user="postgres")
    watch.run("quick", "full")
    for name in ("GhostsyncTriggerDisabled", "GhostsyncTriggerMissing", "GhostsyncTriggerDrift",
                 "GhostsyncFunctionDrift", "GhostsyncAuthSkipsTriggers", "GhostsyncSignupsFailOnAppKey"):
        watch.gone(name)

    # an orphan profile (its auth user deleted with triggers off)
    db.sql("SET session_replication_role = replica; INSERT INTO public.users (id, email) VALUES (%s, %s)",
           (str(uuid.uuid4()), "orphan@example.com"))
    watch.run("full")
    watch.alert("GhostsyncUnhealthy")
    assert watch.evaluate_rule("GhostsyncUnhealthy")
    assert ghostsync_cli(db, "repair").returncode == 0
    watch.run("full")
    watch.gone("GhostsyncUnhealthy")
    assert not [a for a in server.alerts() if a["state"] == "firing"], server.alerts()

    # the check cannot run: the quick check's file says up 0 at once (the alert waits 5 minutes)
    quick_success = float(watch.query('ghostsync_last_success_timestamp_seconds{check="quick"}')[0]["value"][1])
    watch.run("quick", url=unreachable_url())
    assert watch.evaluate_rule("GhostsyncCheckFailing")
    watch.alert("GhostsyncCheckFailing", state="pending")
    kept = float(watch.query('ghostsync_last_success_timestamp_seconds{check="quick"}')[0]["value"][1])
    assert kept == quick_success, "the failing check kept the last success"
    # ... and has been failing for three hours: its last success, carried over, is stale
    text = watch.path("quick").read_text()
    stale = time.time() - 3 * 3600
    watch.path("quick").write_text(re.sub(r'(ghostsync_last_success_timestamp_seconds\{check="quick"\}) \S+',
                                          rf"\1 {stale}", text))
    watch.run("quick", url=unreachable_url())
    fired = watch.alert("GhostsyncCheckStale")
    assert fired[0]["labels"]["check"] == "quick" and float(fired[0]["value"]) > 3 * 3600 - 60
    assert watch.evaluate_rule("GhostsyncCheckStale")

    # no textfile at all
    for path in exporter.textfile_dir.glob("*.prom"):
        path.unlink()
    absent = watch.until("absent(ghostsync_up)")
    assert absent == watch.evaluate_rule("GhostsyncCheckAbsent") or watch.evaluate_rule("GhostsyncCheckAbsent")
    watch.alert("GhostsyncCheckAbsent", state="pending")

    rules = server.rules()
    not_seen = [r["name"] for r in rules if r["name"] not in watch.seen]
    assert not not_seen, f"rules whose expression never returned a series here: {not_seen}"
    for name, result in watch.seen.items():
        if name != "GhostsyncCheckAbsent":
            assert ghostsync_series(result), f"{name} returned no ghostsync series: {result}"
    reliability.record(f"pg{db.owner.major} Prometheus: {len(rules)} rules' expressions and "
                       f"{len(dashboard_queries())} dashboard queries evaluated, each returned ghostsync series")


# -- part three: progress where there is no terminal --------------------------------------------------

PROGRESS_INTERVAL_S = 0.1
# `ghostsync backfill` (ghostsync/progress.py) and the backfill revisions in `migrate upgrade head`
# (kit.backfill): rows walked, ghosts repaired, rate and an estimate of the time left
CLI_PROGRESS = re.compile(r"^backfill: (?P<walked>[\d,]+)/~[\d,]+ \(\d+%\) walked, (?P<repaired>[\d,]+) repaired, "
                          r"[\d,]+/s(, ~[\d,]+ s left)?$")
MIGRATE_PROGRESS = re.compile(r"ghostsync: backfill_ghost_users: (?P<walked>\d+) auth user\(s\) walked, "
                              r"(?P<repaired>\d+) repaired, .*?[\d,.]+/s.*?left")


def timed_lines(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, list[tuple[float, str]]]:
    """Run ``argv`` with its output on pipes (no terminal); every line of standard error with the
    moment it arrived. Bounded by ``timeout``."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode, lines


def assert_steady(matched: list[tuple[float, re.Match[str]]], interval_s: float) -> None:
    assert len(matched) >= 3, f"only {len(matched)} progress line(s)"
    walked = [int(m["walked"].replace(",", "")) for _, m in matched]
    assert walked == sorted(walked) and walked[-1] > walked[0], walked
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(matched)]
    # never more often than the interval (a little slack for the pipe), never much less often
    assert min(gaps) >= interval_s * 0.8, gaps
    assert max(gaps) <= interval_s + 1.5, gaps


def test_backfill_logs_progress_without_a_terminal(db):
    from tests.seeding import seed_bulk_ghosts

    db.upgrade()
    seed_bulk_ghosts(db, 80_000)
    env = dict(os.environ, DATABASE_URL=db.url(), GHOSTSYNC_PROGRESS_INTERVAL=f"{int(PROGRESS_INTERVAL_S * 1000)}ms")
    code, lines = timed_lines([sys.executable, "-m", "ghostsync", "backfill", "--batch-size", "100"], env)
    assert code == 0, lines[-5:]
    matched = [(at, m) for at, line in lines if (m := CLI_PROGRESS.match(line))]
    assert_steady(matched, PROGRESS_INTERVAL_S)
    assert any(", ~" in m.group(0) and " s left" in m.group(0) for _, m in matched), "an estimate of the time left"
    assert int(matched[-1][1]["repaired"].replace(",", "")) > 0
    reliability.record(f"pg{db.owner.major} ghostsync backfill without a terminal: {len(matched)} progress lines, "
                       f"every {PROGRESS_INTERVAL_S:.1f} s; last: {matched[-1][1].group(0)!r}")


def test_upgrade_head_logs_backfill_progress_without_a_terminal(db):
    from tests.seeding import seed_bulk_ghosts

    seed_bulk_ghosts(db, 80_000)
    env = dict(os.environ, DATABASE_URL=db.url())
    code, lines = timed_lines([sys.executable, "-m", "ghostsync", "migrate", "-x", "batch_size=100",
                               "-x", f"progress_interval={int(PROGRESS_INTERVAL_S * 1000)}ms",
                               "upgrade", "head"], env)
    assert code == 0, lines[-5:]
    matched = [(at, m) for at, line in lines if (m := MIGRATE_PROGRESS.search(line))]
    assert_steady(matched, PROGRESS_INTERVAL_S)
    assert int(matched[-1][1]["repaired"]) > 0
    reliability.record(f"pg{db.owner.major} migrate upgrade head without a terminal: {len(matched)} backfill "
                       f"progress lines, every {PROGRESS_INTERVAL_S:.1f} s; last: {matched[-1][1].group(0)!r}")
