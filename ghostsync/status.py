"""``ghostsync status``: is the database free of ghosts, and will it stay so?

``collect`` gathers every figure into a ``Status``; ``render_text``,
``to_json`` and ``write_prometheus`` present it. A database is healthy when
it has no ghosts, orphans, failed syncs or stale profiles, every trigger the
head revision installs exists and is enabled, every function's text is what
the head revision installs, and the database is at the head revision.

Cost: the full status reads auth.users and public.users once, in one full
join on their primary keys (ghosts, orphans and stale profiles in one pass).
With ``since`` it looks only at auth users created in that window and skips
orphans and stale profiles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ghostsync import chain, health

SCHEMA_VERSION = 1


class StatusError(RuntimeError):
    """The status could not be checked; the message says why and what to do."""


@dataclass
class Status:
    ghosts: int
    orphans: int | None
    failed_syncs: int
    stale_profiles: int | None
    triggers: dict[str, dict[str, bool]]
    trigger_enabled: bool
    functions: dict[str, str]
    function_matches_head: bool
    revision: str | None
    head: str | None
    last_backfill: dict[str, Any] | None
    last_repair: dict[str, Any] | None
    since_seconds: int | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        data["schema_version"] = SCHEMA_VERSION
        return data


def _functions(conn: Connection, expected: dict[str, str]) -> dict[str, str]:
    """Each expected function: 'matches', 'differs' (text, SECURITY DEFINER or search_path) or 'missing'."""
    states: dict[str, str] = {}
    for signature, body in expected.items():
        row = conn.execute(
            text(
                "SELECT prosrc, prosecdef, proconfig FROM pg_proc "
                "WHERE oid = to_regprocedure(:signature)"
            ),
            {"signature": signature},
        ).first()
        if row is None:
            states[signature] = "missing"
        elif row[0] == body and row[1] and list(row[2] or []) == ['search_path=""']:
            states[signature] = "matches"
        else:
            states[signature] = "differs"
    return states


def _revision(conn: Connection, known: set[str]) -> str | None:
    """ghostsync's row of alembic_version.

    Inside a host project the table holds one row per branch head; the row
    that names a ghostsync revision is ghostsync's. A row naming no known
    revision is reported only when no ghostsync row exists (a newer or foreign
    ghostsync).
    """
    if conn.execute(text("SELECT to_regclass('public.alembic_version')")).scalar() is None:
        return None
    rows = [str(r[0]) for r in conn.execute(text("SELECT version_num FROM public.alembic_version ORDER BY 1"))]
    ours = [r for r in rows if r in known]
    if ours:
        return ours[0]
    # a newer ghostsync's row, or the only row there is
    unknown = next((r for r in rows if r.startswith("ghostsync_")), rows[0] if len(rows) == 1 else None)
    if unknown is not None:
        raise StatusError(
            f"the database is at revision {unknown}, which this ghostsync does not know: "
            "upgrade ghostsync (or point it at the right alembic.ini)"
        )
    return None


def _last_run(conn: Connection, job: str) -> dict[str, Any] | None:
    runs = health.last_runs(conn, job, limit=1)
    if not runs:
        return None
    run = runs[0]
    return {
        "id": run["id"],
        "status": run["status"],
        "records_affected": run["records_affected"],
        "started_at": run["started_at"].isoformat() if run["started_at"] else None,
        "finished_at": run["finished_at"].isoformat() if run["finished_at"] else None,
    }


def _profiles_rls(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.users'::regclass"))
                .scalar())


def _require(conn: Connection) -> None:
    checks = conn.execute(
        text(
            "SELECT to_regclass('auth.users') IS NOT NULL, to_regclass('public.users') IS NOT NULL, "
            "to_regclass('ghostsync.sync_failures') IS NOT NULL"
        )
    ).one()
    if not checks[0]:
        raise StatusError("no auth.users in this database: is DATABASE_URL a Supabase database?")
    if not checks[1]:
        raise StatusError("public.users does not exist: ghostsync is not installed; run `alembic upgrade head`")
    if not checks[2]:
        raise StatusError("ghostsync.sync_failures does not exist: run `alembic upgrade head`")


def collect(conn: Connection, *, since: timedelta | None = None) -> Status:
    """Gather the status in one read-only transaction."""
    _require(conn)
    revision = _revision(conn, chain.known_revisions())
    expected = chain.installed_at()
    failed = health.count_failed_syncs(conn)
    if since is None:
        ghosts, orphans, stale = health.full_counts(conn)
        orphans_or_none: int | None = orphans
        stale_or_none: int | None = stale
    else:
        ghosts = health.count_ghosts(conn, within=since)
        orphans_or_none = stale_or_none = None
    triggers = {
        state.name: {"exists": state.exists, "enabled": state.enabled}
        for state in health.trigger_states(conn, tuple(expected.triggers))
    }
    functions = _functions(conn, expected.functions)
    status = Status(
        ghosts=ghosts,
        orphans=orphans_or_none,
        failed_syncs=failed,
        stale_profiles=stale_or_none,
        triggers=triggers,
        trigger_enabled=all(t["exists"] and t["enabled"] for t in triggers.values()),
        functions=functions,
        function_matches_head=all(state == "matches" for state in functions.values()),
        revision=revision,
        head=expected.revision,
        last_backfill=_last_run(conn, "backfill_ghost_users"),
        last_repair=_last_run(conn, "repair_failed_syncs"),
        since_seconds=int(since.total_seconds()) if since is not None else None,
    )
    _judge(status, rls=_profiles_rls(conn), reinstall_from=expected.reinstall_from)
    return status


def _judge(status: Status, *, rls: bool, reinstall_from: dict[str, str]) -> None:
    window = "" if status.since_seconds is None else f" created in the last {status.since_seconds} s"
    if status.ghosts:
        status.problems.append(
            f"{status.ghosts} auth user(s){window} have no profile (ghosts): run `ghostsync repair`")
    if status.orphans:
        status.problems.append(f"{status.orphans} profile(s) have no auth user (orphans)")
    if status.failed_syncs:
        status.problems.append(
            f"{status.failed_syncs} profile write(s) failed and are recorded in ghostsync.sync_failures: "
            "fix the cause, then run `ghostsync repair`")
    if status.stale_profiles:
        status.problems.append(
            f"{status.stale_profiles} profile(s) disagree with auth.users on email or email_verified (stale): "
            "run `ghostsync repair`")
    for name, state in status.triggers.items():
        if not state["exists"]:
            status.problems.append(f"trigger {name} on auth.users is missing: run `alembic upgrade head`")
        elif not state["enabled"]:
            status.problems.append(f"trigger {name} on auth.users is disabled: ENABLE it")
    for signature, verdict in status.functions.items():
        if verdict == "differs":
            below = reinstall_from.get(signature, "base")
            status.problems.append(
                f"function {signature} differs from what revision {status.head} installs "
                f"(edited by hand?): `alembic downgrade {below} && alembic upgrade head` reinstalls it")
        elif verdict == "missing":
            status.problems.append(f"function {signature} is missing: run `alembic upgrade head`")
    if status.revision != status.head:
        status.problems.append(
            f"the database is at revision {status.revision or 'none'}, head is {status.head}: "
            "run `alembic upgrade head`")
    if not rls:
        status.warnings.append(
            "public.users has row level security disabled: anyone with the anon key can read every profile")
    if status.last_backfill and status.last_backfill["status"] in ("failed", "interrupted"):
        status.warnings.append(f"the last backfill ended {status.last_backfill['status']}")


def to_json(status: Status) -> str:
    return json.dumps(status.as_dict(), indent=2, sort_keys=True, default=str)


def render_text(status: Status) -> str:
    def figure(value: int | None) -> str:
        return "not checked (--since)" if value is None else str(value)

    window = "" if status.since_seconds is None else f" (signups of the last {status.since_seconds} s)"
    lines = [
        f"ghostsync status: {'HEALTHY' if status.healthy else 'UNHEALTHY'}",
        f"  ghosts            {status.ghosts}{window}",
        f"  orphans           {figure(status.orphans)}",
        f"  failed syncs      {status.failed_syncs}",
        f"  stale profiles    {figure(status.stale_profiles)}",
        f"  revision          {status.revision or 'none'} (head {status.head})",
    ]
    for name, state in status.triggers.items():
        word = "enabled" if state["enabled"] else ("DISABLED" if state["exists"] else "MISSING")
        lines.append(f"  trigger           {name}: {word}")
    for signature, verdict in status.functions.items():
        lines.append(f"  function          {signature}: {verdict}")
    for label, run in (("last backfill", status.last_backfill), ("last repair", status.last_repair)):
        if run is None:
            lines.append(f"  {label:<17} never")
        else:
            lines.append(f"  {label:<17} {run['status']}, {run['records_affected']} row(s), "
                         f"finished {run['finished_at'] or '-'}")
    lines += [f"  problem: {p}" for p in status.problems]
    lines += [f"  warning: {w}" for w in status.warnings]
    return "\n".join(lines)


def write_prometheus(status: Status, path: Path) -> None:
    """Write the figures for node_exporter's textfile collector (atomically, via prometheus_client)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> None:
        metric = Gauge(name, doc, list(labels or {}), registry=registry)
        (metric.labels(**labels) if labels else metric).set(value)

    gauge("ghostsync_ghosts", "Auth users without a profile.", status.ghosts)
    if status.orphans is not None:
        gauge("ghostsync_orphans", "Profiles without an auth user.", status.orphans)
    if status.stale_profiles is not None:
        gauge("ghostsync_stale_profiles", "Profiles disagreeing with auth.users.", status.stale_profiles)
    gauge("ghostsync_failed_syncs", "Recorded failed profile writes.", status.failed_syncs)
    gauge("ghostsync_trigger_enabled", "1 if every ghostsync trigger exists and is enabled.",
          int(status.trigger_enabled))
    gauge("ghostsync_function_matches_head", "1 if every ghostsync function matches the head revision.",
          int(status.function_matches_head))
    gauge("ghostsync_at_head", "1 if the database is at the head revision.", int(status.revision == status.head))
    gauge("ghostsync_healthy", "1 if ghostsync status is healthy.", int(status.healthy))
    gauge("ghostsync_problems", "Number of problems status reports.", len(status.problems))
    write_to_textfile(str(path), registry)

