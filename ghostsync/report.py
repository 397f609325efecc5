"""How ``ghostsync status`` shows what it found: text, JSON, Prometheus metrics.

The JSON object (``schema_version`` 2) has the same keys in every mode; a
figure the quick check does not compute is null, and a check that could not
run prints ``{"schema_version": 2, "up": false, "error": {"code", "message"}}``.

The Prometheus textfile (for node_exporter's textfile collector; its name must
end in ``.prom``) is written atomically in every case, also when the check
itself failed: a temporary file in the same folder, renamed over the old one,
so the collector never reads half a file and an old ``ghostsync_healthy 1``
never outlives a check that could not run. Then ``ghostsync_up`` is 0,
``ghostsync_check_error{code}`` says why, and
``ghostsync_last_success_timestamp_seconds`` keeps the time of the last check
that ran (carried over from the previous file; 0 when none ever did), so an
alert on a failing or stale check fires. Every series has the label ``check``
("full" or "quick"): both cadences write files of their own side by side
with the same metric names. Counters end in ``_total``.

The metrics (``METRICS`` lists every name; ``docs/OPERATIONS.md`` shows them):

- the check: ``ghostsync_up``, ``ghostsync_last_success_timestamp_seconds``,
  ``ghostsync_check_duration_seconds``, ``ghostsync_check_error{code}``;
- the verdict: ``ghostsync_healthy``, ``ghostsync_at_head``,
  ``ghostsync_standby``, ``ghostsync_problems``, ``ghostsync_warnings`` and,
  for every problem and warning code status knows, ``ghostsync_problem{code}``
  / ``ghostsync_warning{code}`` (0 when absent, so the series never vanish;
  NaN in the quick check for the codes only the full check can see);
- the figures: ``ghostsync_ghosts``, ``_orphans``, ``_stale_profiles``,
  ``_failed_syncs``, ``_auth_users``, ``_profiles`` (NaN where not computed);
- the objects: ``ghostsync_trigger_enabled{trigger}``,
  ``ghostsync_trigger_matches{trigger}``, ``ghostsync_function_matches{function}``;
- counters that cost nothing to read, per server (absent on a hot standby,
  whose statistics are its own): ``ghostsync_auth_users_inserted_total``
  (signups), ``..._auth_users_deleted_total``, ``..._profiles_inserted_total``,
  ``..._failed_profile_writes_total`` (failures recorded in the ledger), and,
  where ``track_functions`` is ``pl`` or ``all``,
  ``ghostsync_trigger_calls_total`` and ``ghostsync_trigger_seconds_total``;
  ``ghostsync_trigger_timing_tracked`` is 0 where it is off.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from ghostsync import findings
from ghostsync.errors import GhostsyncError
from ghostsync.status import Status

PROMETHEUS_EXTRA = "the --prometheus option needs the prometheus extra: pip install 'ghostsync[prometheus]'"

# Every code status reports, from the catalogue (a code not listed is still exported when it occurs).
PROBLEM_CODES = findings.PROBLEM_CODES
WARNING_CODES = findings.WARNING_CODES
# what only the full check can see: NaN, not 0, in the quick check's textfile
FULL_ONLY_CODES = findings.FULL_ONLY_CODES


def to_json(status: Status) -> str:
    return json.dumps(status.as_dict(), indent=2, sort_keys=True, default=str)


def _counter_lines(status: Status) -> list[str]:
    counters = status.counters
    if status.standby:
        return ["  counters          not read on a hot standby (pg_stat_* figures are per server: read them "
                "on the primary)"]
    lines = []
    signups = counters.get("auth_users_inserted")
    if signups is not None:
        lines.append(f"  signups           {signups} auth.users row(s) inserted since the statistics were reset "
                     f"({counters.get('auth_users_deleted', 0)} deleted)")
    failed = counters.get("failed_profile_writes")
    if failed is not None:
        lines.append(f"  failed writes     {failed} profile write(s) failed and were recorded since the statistics "
                     "were reset")
    track = counters.get("track_functions")
    if track in ("pl", "all") and counters.get("trigger_calls") is not None:
        calls, seconds = int(counters["trigger_calls"]), float(counters.get("trigger_seconds") or 0.0)
        mean = f", {seconds * 1000 / calls:.3f} ms per call" if calls else ""
        lines.append(f"  trigger time      {seconds * 1000:.1f} ms in {calls} call(s) of ghostsync's functions{mean}")
    elif track is not None:
        lines.append(f"  trigger time      not tracked (track_functions = {track}; ALTER DATABASE ... SET "
                     "track_functions = 'pl' to measure it)")
    return lines


def render_text(status: Status) -> str:
    def figure(value: int | None) -> str:
        return "not checked (quick)" if value is None else str(value)

    lines = [
        f"ghostsync status: {'HEALTHY' if status.healthy else 'UNHEALTHY'} ({status.check} check"
        + (", hot standby" if status.standby else "") + ")",
        f"  ghosts            {figure(status.ghosts)}",
        f"  orphans           {figure(status.orphans)}",
        f"  failed syncs      {figure(status.failed_syncs)}",
        f"  stale profiles    {figure(status.stale_profiles)}",
        f"  auth users        {figure(status.auth_users)}",
        f"  profiles          {figure(status.profiles)}",
        f"  revision          {status.revision or 'none'} (head {status.head})",
    ]
    for name, state in status.triggers.items():
        definition = "" if state["matches"] or state["state"] in ("missing", "not_ghostsyncs") else ", DIFFERS"
        lines.append(f"  trigger           {name} on {state['table']}: {state['state']}{definition}")
    for signature, fstate in status.functions.items():
        lines.append(f"  function          {signature}: {fstate['state']}"
                     + (f" ({'; '.join(fstate['differences'])})" if fstate["differences"] else ""))
    for name, app in status.app_triggers.items():
        lines.append(f"  app's trigger     {name} -> {app['function']}: {app['state']} (not ghostsync's; left alone)")
    for job, run in status.jobs.items():
        if run is None:
            lines.append(f"  last {job:<12} never")
        else:
            lines.append(f"  last {job:<12} {run['status']}, {run['records_affected']} row(s), "
                         f"finished {run['finished_at'] or '-'}")
    lines += _counter_lines(status)
    lines += [f"  problem [{p.code}]: {p.message}" for p in status.problems]
    lines += [f"  warning [{w.code}]: {w.message}" for w in status.warnings]
    return "\n".join(lines)


# -- Prometheus -------------------------------------------------------------------------------------

GAUGES = (
    ("ghostsync_ghosts", "Auth users without a profile (NaN: not computed by this check).", "ghosts"),
    ("ghostsync_orphans", "Profiles without an auth user (NaN: not computed by this check).", "orphans"),
    ("ghostsync_stale_profiles", "Profiles disagreeing with auth.users (NaN: not computed by this check).",
     "stale_profiles"),
    ("ghostsync_failed_syncs", "Users whose last profile write failed (rows of ghostsync.sync_failures).",
     "failed_syncs"),
    ("ghostsync_auth_users", "Rows of auth.users (NaN: not computed by this check).", "auth_users"),
    ("ghostsync_profiles", "Rows of public.users (NaN: not computed by this check).", "profiles"),
)
COUNTERS = (
    ("ghostsync_auth_users_inserted_total", "Rows inserted into auth.users (signups), per pg_stat_user_tables.",
     "auth_users_inserted"),
    ("ghostsync_auth_users_deleted_total", "Rows deleted from auth.users, per pg_stat_user_tables.",
     "auth_users_deleted"),
    ("ghostsync_profiles_inserted_total", "Rows inserted into public.users, per pg_stat_user_tables.",
     "profiles_inserted"),
    ("ghostsync_failed_profile_writes_total", "Profile writes that failed and were recorded in "
     "ghostsync.sync_failures, per pg_stat_user_tables.", "failed_profile_writes"),
    ("ghostsync_trigger_calls_total", "Calls of ghostsync's functions (pg_stat_user_functions; needs "
     "track_functions = pl).", "trigger_calls"),
    ("ghostsync_trigger_seconds_total", "Time spent in ghostsync's functions (pg_stat_user_functions; needs "
     "track_functions = pl).", "trigger_seconds"),
)
CHECK_METRICS = (
    "ghostsync_up", "ghostsync_last_success_timestamp_seconds", "ghostsync_check_duration_seconds",
    "ghostsync_check_error",
)
STATUS_METRICS = (
    "ghostsync_healthy", "ghostsync_at_head", "ghostsync_standby", "ghostsync_problems", "ghostsync_warnings",
    "ghostsync_problem", "ghostsync_warning", *(name for name, _, _ in GAUGES),
    "ghostsync_trigger_enabled", "ghostsync_trigger_matches", "ghostsync_function_matches",
    "ghostsync_trigger_timing_tracked", *(name for name, _, _ in COUNTERS),
)
METRICS = (*CHECK_METRICS, *STATUS_METRICS)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def check_textfile_name(path: Path) -> None:
    if not path.name.endswith(".prom"):
        raise GhostsyncError(f"--prometheus {path}: node_exporter's textfile collector reads only files ending in "
                             ".prom")


def last_success(path: Path, check: str) -> float | None:
    """The last successful check's time as the file at ``path`` holds it (None: no file, or none there)."""
    try:
        previous = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r'^ghostsync_last_success_timestamp_seconds\{check="' + re.escape(check)
                      + r'"\} (\S+)$', previous, re.MULTILINE)
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def prometheus_text(status: Status | None, *, check: str, duration_s: float, error_code: str | None = None,
                    previous_success: float | None = None, now: float | None = None) -> bytes:
    """The textfile's content: ``status``'s metrics, or those of a check that could not run (``None``)."""
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import generate_latest
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        raise GhostsyncError(PROMETHEUS_EXTRA) from None

    families: dict[str, Any] = {}

    def add(kind: str, name: str, doc: str, value: float, extra: dict[str, str] | None = None) -> None:
        labels = {"check": check, **(extra or {})}
        family = families.get(name)
        if family is None:
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))
            else:
                family = GaugeMetricFamily(name, doc, labels=list(labels))
            families[name] = family
        family.add_metric(list(labels.values()), value)

    add("gauge", "ghostsync_up", "1 if the check ran, 0 if it could not (database unreachable, missing privilege).",
        0 if status is None else 1)
    last = (time.time() if now is None else now) if status is not None else previous_success
    add("gauge", "ghostsync_last_success_timestamp_seconds",
        "Unix time of the last check that ran (0: none ever did).", last or 0.0)
    add("gauge", "ghostsync_check_duration_seconds", "How long the check took.", duration_s)
    if status is None:
        add("gauge", "ghostsync_check_error", "1 for the reason the check could not run.", 1,
            {"code": error_code or "unknown"})
    else:
        data = status.as_dict()
        add("gauge", "ghostsync_healthy", "1 if ghostsync status is healthy (no problem).", int(status.healthy))
        add("gauge", "ghostsync_at_head", "1 if the database is at the head revision.", int(status.at_head))
        add("gauge", "ghostsync_standby", "1 if the check ran on a hot standby.", int(status.standby))
        add("gauge", "ghostsync_problems", "Problems status reports.", len(status.problems))
        add("gauge", "ghostsync_warnings", "Warnings status reports.", len(status.warnings))
        problems = [f.code for f in status.problems]
        for code in dict.fromkeys((*PROBLEM_CODES, *problems)):
            unseen = status.check == "quick" and code in FULL_ONLY_CODES
            add("gauge", "ghostsync_problem", "Problems of each kind status reports (NaN: not checked).",
                math.nan if unseen else problems.count(code), {"code": code})
        warnings = [f.code for f in status.warnings]
        for code in dict.fromkeys((*WARNING_CODES, *warnings)):
            add("gauge", "ghostsync_warning", "Warnings of each kind status reports.", warnings.count(code),
                {"code": code})
        for name, doc, key in GAUGES:
            add("gauge", name, doc, _number(data[key]))
        for trigger, state in status.triggers.items():
            add("gauge", "ghostsync_trigger_enabled", "1 if the ghostsync trigger exists and fires for ordinary "
                "sessions.", int(state["state"] == "enabled"), {"trigger": trigger})
            add("gauge", "ghostsync_trigger_matches", "1 if the trigger's definition is what its revision declares.",
                int(bool(state["matches"]) and state["state"] not in ("missing", "not_ghostsyncs")),
                {"trigger": trigger})
        for signature, fstate in status.functions.items():
            add("gauge", "ghostsync_function_matches", "1 if the function is what its revision declares.",
                int(fstate["state"] == "matches"), {"function": signature})
        track = status.counters.get("track_functions")
        if track is not None:
            add("gauge", "ghostsync_trigger_timing_tracked", "1 if track_functions lets PostgreSQL time ghostsync's "
                "functions (pl or all), 0 if it is off.", int(track in ("pl", "all")), {"setting": str(track)})
        for name, doc, key in COUNTERS:
            value = status.counters.get(key)
            if value is not None:
                add("counter", name, doc, float(value))

    class _Collected:
        def collect(self) -> Any:
            return iter(families.values())

    registry = CollectorRegistry()
    registry.register(_Collected())
    return bytes(generate_latest(registry))


def write_prometheus(path: Path, status: Status | None, *, check: str, duration_s: float,
                     error_code: str | None = None) -> None:
    """Write the metrics of ``status`` (None: the check could not run) to ``path``, atomically."""
    body = prometheus_text(status, check=check, duration_s=duration_s, error_code=error_code,
                           previous_success=None if status is not None else last_success(path, check))
    write_atomically(path, body)


def write_atomically(path: Path, body: bytes) -> None:
    """Write to a temporary file in the same folder (never ending in .prom, so the collector skips it),
    make it readable, flush it to disk, then rename it over ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = [
    "METRICS",
    "PROBLEM_CODES",
    "WARNING_CODES",
    "check_textfile_name",
    "last_success",
    "prometheus_text",
    "render_text",
    "to_json",
    "write_atomically",
    "write_prometheus",
]
