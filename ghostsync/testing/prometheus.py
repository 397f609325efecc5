"""Throwaway Prometheus, promtool and node_exporter on loopback: the real parts a monitoring setup uses.

Debian's ``prometheus`` package brings ``prometheus`` and ``promtool``;
``prometheus-node-exporter`` brings node_exporter. Both packages start their
services on install (ports 9090 and 9100): ``make test`` stops them, as it
does PgBouncer's, and these classes run processes of their own instead, on
127.0.0.1 and free ports, each in a temporary directory:

- ``ThrowawayNodeExporter(textfile_dir)``: only the textfile collector
  (``--collector.disable-defaults --collector.textfile``), reading the
  ``*.prom`` files that ``ghostsync status --prometheus`` writes into
  ``textfile_dir``;
- ``ThrowawayPrometheus(targets, rule_files)``: scrapes ``targets`` (job
  ``node``) every ``scrape_interval`` (default 1s) and evaluates
  ``rule_files`` every ``evaluation_interval`` (default 1s); ``query(expr)``,
  ``alerts()`` and ``rules()`` read its HTTP API;
- ``promtool(*args)``: ``promtool check rules ...``, ``promtool test rules ...``.

Binaries are found through ``GHOSTSYNC_PROMETHEUS``, ``GHOSTSYNC_PROMTOOL`` and
``GHOSTSYNC_NODE_EXPORTER``, then ``PATH``, then Debian's paths. ``missing()``
names what this machine lacks, so a test suite can report NOT AVAILABLE
instead of passing without them.

Contract: ``start()`` returns once the process answers on its port; ``stop()``
ends it (SIGTERM, then SIGKILL) and deletes its directory; leaving the context
manager, or the interpreter, stops it too. Every wait is bounded.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ghostsync.testing.server import _free_port

T = TypeVar("T")

TOOLS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # tool: (environment override, names on PATH, Debian's paths)
    "prometheus": ("GHOSTSYNC_PROMETHEUS", ("prometheus",), ("/usr/bin/prometheus",)),
    "promtool": ("GHOSTSYNC_PROMTOOL", ("promtool",), ("/usr/bin/promtool",)),
    "node_exporter": ("GHOSTSYNC_NODE_EXPORTER", ("prometheus-node-exporter", "node_exporter"),
                      ("/usr/bin/prometheus-node-exporter", "/usr/sbin/prometheus-node-exporter")),
}
DEBIAN_PACKAGES = "prometheus prometheus-node-exporter"


class PrometheusError(RuntimeError):
    """A tool is missing, or a process could not be started, queried or stopped."""


def find(tool: str) -> str | None:
    """The binary of ``tool`` ("prometheus", "promtool", "node_exporter"), or None."""
    env, names, paths = TOOLS[tool]
    override = os.environ.get(env)
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for path in paths:
        if os.access(path, os.X_OK):
            return path
    return None


def missing() -> list[str]:
    """The tools this machine lacks (empty when all three are there)."""
    return [tool for tool in TOOLS if find(tool) is None]


def version(tool: str) -> str | None:
    binary = find(tool)
    if binary is None:
        return None
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (proc.stdout + proc.stderr).strip()
    return out.splitlines()[0].strip() if out else None


def availability_line() -> str:
    """One line for a test report: where the tools are, or that they are NOT AVAILABLE."""
    absent = missing()
    if absent:
        return (f"Prometheus: NOT AVAILABLE on this machine (no {', '.join(absent)}; Debian: apt-get install "
                f"{DEBIAN_PACKAGES}); the tests that need a real Prometheus were not run")
    return "Prometheus: " + "; ".join(f"{find(tool)} ({version(tool) or 'unknown version'})" for tool in TOOLS)


def promtool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``promtool ARGS`` and return what it did (not raising on a non-zero exit)."""
    binary = find("promtool")
    if binary is None:
        raise PrometheusError(f"promtool is not installed (Debian: apt-get install {DEBIAN_PACKAGES})")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


class _Throwaway:
    """One process of ``tool`` on 127.0.0.1 and a free port, in a temporary directory."""

    tool = ""
    ready_path = "/"

    def __init__(self) -> None:
        binary = find(self.tool)
        if binary is None:
            raise PrometheusError(f"{self.tool} is not installed (Debian: apt-get install {DEBIAN_PACKAGES})")
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix=f"ghostsync-{self.tool.replace('_', '-')}-"))
        self.logfile = self.root / f"{self.tool}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        try:
            return _get(self.base_url + self.ready_path, timeout=2)[0] == 200
        except OSError:
            return False

    def start(self, timeout: float = 60) -> Any:
        if self._proc is not None:
            return self
        self.port = _free_port()
        with self.logfile.open("ab") as log:
            self._proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                          start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                log_text = self.logfile.read_text(errors="replace")[-3000:]
                raise PrometheusError(f"{self.tool} exited ({code}) before it answered:\n{log_text}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"{self.tool} did not answer on {self.address} within {timeout:.0f} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ThrowawayNodeExporter(_Throwaway):
    """node_exporter with only its textfile collector, reading ``textfile_dir``."""

    tool = "node_exporter"
    ready_path = "/metrics"

    def __init__(self, textfile_dir: Path | None = None) -> None:
        super().__init__()
        self.textfile_dir = Path(textfile_dir) if textfile_dir else self.root / "textfile"
        self.textfile_dir.mkdir(parents=True, exist_ok=True)

    def _argv(self) -> list[str]:
        return [self.binary, f"--web.listen-address={self.address}", "--collector.disable-defaults",
                "--collector.textfile", f"--collector.textfile.directory={self.textfile_dir}"]

    def metrics(self) -> str:
        """What a scrape sees right now."""
        status, body = _get(self.base_url + "/metrics")
        if status != 200:
            raise PrometheusError(f"node_exporter answered {status}: {body[:300]!r}")
        return body.decode()


class ThrowawayPrometheus(_Throwaway):
    """Prometheus scraping ``targets`` (job ``node``) and evaluating ``rule_files``."""

    tool = "prometheus"
    ready_path = "/-/ready"

    def __init__(self, targets: Sequence[str], rule_files: Sequence[Path] = (), *, scrape_interval: str = "1s",
                 evaluation_interval: str = "1s") -> None:
        super().__init__()
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.config = self.root / "prometheus.yml"

    def _argv(self) -> list[str]:
        # JSON is YAML: no YAML library needed to write the configuration
        self.config.write_text(json.dumps({
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.evaluation_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": "node", "static_configs": [{"targets": self.targets}]}],
        }, indent=2))
        return [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address={self.address}", "--log.level=warn"]

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: its ``data``, or PrometheusError with Prometheus's own error."""
        url = f"{self.base_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = _get(url, timeout=10)
        try:
            answer = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{path}: HTTP {status}: {body[:300]!r}") from None
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now: the instant vector's samples ({"metric": labels, "value": [t, "v"]})."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets_up(self) -> bool:
        active = self.api("targets").get("activeTargets", [])
        return bool(active) and all(t.get("health") == "up" for t in active)

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded (alerting and recording), with its ``query`` and ``state``."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts (pending or firing)."""
        return list(self.api("alerts")["alerts"])

    def firing(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"].get("alertname") == name and a["state"] == "firing"]

    def wait_for_targets(self, timeout: float = 30) -> bool:
        """True once every target has been scraped successfully (bounded by ``timeout``)."""
        return bool(wait_until(self.targets_up, timeout))


__all__ = [
    "PrometheusError",
    "ThrowawayNodeExporter",
    "ThrowawayPrometheus",
    "availability_line",
    "find",
    "missing",
    "promtool",
    "version",
    "wait_until",
]
