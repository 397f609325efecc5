"""How ``ghostsync status`` shows what it found: text, JSON, Prometheus metrics.

The JSON object (``schema_version`` 2) has the same keys in every mode; a
figure the quick check does not compute is null, and a check that could not
run prints ``{"schema_version": 2, "up": false, "error": {...}}``.

The Prometheus textfile (for node_exporter's textfile collector) is written
atomically in every case, also when the check itself failed: then
``ghostsync_up`` is 0 and ``ghostsync_last_success_timestamp_seconds`` keeps
the time of the last check that ran, so an alert on a stale or failing
check fires instead of an old ``ghostsync_healthy 1`` staying in place.
Every series has the label ``check`` ("full" or "quick"), so both cadences
can write files side by side; counters end in ``_total``.
"""

from __future__ import annotations

import json
from collections import Counter
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from ghostsync.status import Status

PROMETHEUS_EXTRA = "the --prometheus option needs the prometheus extra: pip install 'ghostsync[prometheus]'"


def to_json(status: Status) -> str:
    return json.dumps(status.as_dict(), indent=2, sort_keys=True, default=str)


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
    lines += [f"  problem [{p.code}]: {p.message}" for p in status.problems]
    lines += [f"  warning [{w.code}]: {w.message}" for w in status.warnings]
    return "\n".join(lines)


# -- Prometheus -------------------------------------------------------------------------------------

GAUGES = (
    ("ghostsync_ghosts", "Auth users without a profile (NaN: not computed by this check).", "ghosts"),
    ("ghostsync_orphans", "Profiles without an auth user (NaN: not computed by this check).", "orphans"),
    ("ghostsync_stale_profiles", "Profiles disagreeing with auth.users (NaN: not computed).", "stale_profiles"),
    ("ghostsync_failed_syncs", "Users whose last profile write failed (ghostsync.sync_failures rows).",
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
    ("ghostsync_failed_profile_writes_total", "Profile writes that failed (sum of sync_failures.failures).",
     "failed_profile_writes"),
    ("ghostsync_trigger_calls_total", "Calls of ghostsync's functions (pg_stat_user_functions; track_functions).",
     "trigger_calls"),
    ("ghostsync_trigger_seconds_total", "Time spent in ghostsync's functions (pg_stat_user_functions).",
     "trigger_seconds"),
)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _last_success(path: Path, check: str) -> float | None:
    """The last successful check's time from the previous file, to keep it when this check fails."""
    try:
        previous = path.read_text()
    except OSError:
        return None
    match = re.search(r'^ghostsync_last_success_timestamp_seconds\{check="' + re.escape(check)
                      + r'"\} (\S+)$', previous, re.MULTILINE)
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def check_textfile_name(path: Path) -> None:
    if not path.name.endswith(".prom"):
        raise ValueError(f"--prometheus {path}: node_exporter's textfile collector reads only files ending in .prom")


def write_prometheus(path: Path, status: Status | None, *, check: str, duration_s: float,
                     error_code: str | None = None) -> None:
    """Write the metrics of ``status`` (None: the check could not run) to ``path``, atomically."""
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import generate_latest
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        raise RuntimeError(PROMETHEUS_EXTRA) from None

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
    last = time.time() if status is not None else _last_success(path, check)
    if last is not None:
        add("gauge", "ghostsync_last_success_timestamp_seconds", "Unix time of the last check that ran.", last)
    add("gauge", "ghostsync_check_duration_seconds", "How long the check took.", duration_s)
    if status is None:
        add("gauge", "ghostsync_check_error", "1 for the reason the check could not run.", 1,
            {"code": error_code or "unknown"})
    else:
        data = status.as_dict()
        add("gauge", "ghostsync_healthy", "1 if ghostsync status is healthy.", int(status.healthy))
        for name, doc, key in GAUGES:
            add("gauge", name, doc, _number(data[key]))
        for name, doc, key in COUNTERS:
            value = status.counters.get(key)
            if value is not None:
                add("counter", name, doc, float(value))
        for trigger, state in status.triggers.items():
            add("gauge", "ghostsync_trigger_enabled", "1 if the ghostsync trigger exists and fires for ordinary "
                "sessions.", int(state["state"] == "enabled"), {"trigger": trigger})
            add("gauge", "ghostsync_trigger_matches", "1 if the trigger's definition is what its revision declares.",
                int(bool(state["matches"])), {"trigger": trigger})
        for signature, fstate in status.functions.items():
            add("gauge", "ghostsync_function_matches", "1 if the function is what its revision declares.",
                int(fstate["state"] == "matches"), {"function": signature})
        add("gauge", "ghostsync_at_head", "1 if the database is at the head revision.", int(status.at_head))
        add("gauge", "ghostsync_problems", "Problems status reports.", len(status.problems))
        add("gauge", "ghostsync_warnings", "Warnings status reports.", len(status.warnings))
        for code, count in Counter(f.code for f in status.problems).items():
            add("gauge", "ghostsync_problem", "Problems of each kind status reports.", count, {"code": code})
        for code, count in Counter(f.code for f in status.warnings).items():
            add("gauge", "ghostsync_warning", "Warnings of each kind status reports.", count, {"code": code})

    class _Collected:
        def collect(self) -> Any:
            return iter(families.values())

    registry = CollectorRegistry()
    registry.register(_Collected())  # type: ignore[arg-type]
    _write_atomically(path, generate_latest(registry))


def _write_atomically(path: Path, body: bytes) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
