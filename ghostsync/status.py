"""``ghostsync status``: is the database free of ghosts, and will it stay so?

``collect`` gathers every figure into a ``Status`` in one read-only
transaction (so it also runs on a hot standby); ``ghostsync.report`` presents
it as text, JSON or Prometheus metrics. The verdict reads the declaration of
the revision the database is at (``chain.declared_at``):

- a problem (exit 1): ghosts, orphans, failed syncs, stale profiles; a
  ghostsync trigger missing, disabled, replica-only or not as declared; a
  ghostsync function missing or not as declared (text, SECURITY DEFINER,
  search_path, owner, EXECUTE grants); an object of ghostsync's name that
  ghostsync did not create; a table ghostsync created with RLS off or
  privileges open to end users; a profile table that cannot take what the
  sync writes;
- a warning (still healthy): the database is behind head but holds exactly
  what its revision declares (``behind_head``); the last run of a job
  failed or was interrupted; an adopted table with RLS off or open
  privileges (the app's decision).

Two cadences: the full check (``check="full"``) reads both tables once (one
full join on their keys); the quick check (``check="quick"``) reads only the
catalogs, the failure ledger, the audit log and the statistics views, so
its cost does not grow with the number of users, and leaves the figures it
does not compute null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ghostsync import app_triggers, chain, drift, health, names, roads, version_table
from ghostsync.chain import Declared

SCHEMA_VERSION = 2


class StatusError(RuntimeError):
    """The status could not be checked; ``code`` is stable, the message says why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Finding:
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class Status:
    check: str
    revision: str | None
    head: str | None
    ghosts: int | None = None
    orphans: int | None = None
    stale_profiles: int | None = None
    failed_syncs: int | None = None
    auth_users: int | None = None
    profiles: int | None = None
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    app_triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    standby: bool = False
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def at_head(self) -> bool:
        return self.revision is not None and self.revision == self.head

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "up": True,
            "check": self.check,
            "healthy": self.healthy,
            "revision": self.revision,
            "head": self.head,
            "at_head": self.at_head,
            "standby": self.standby,
            "ghosts": self.ghosts,
            "orphans": self.orphans,
            "stale_profiles": self.stale_profiles,
            "failed_syncs": self.failed_syncs,
            "auth_users": self.auth_users,
            "profiles": self.profiles,
            "triggers": self.triggers,
            "functions": self.functions,
            "app_triggers": self.app_triggers,
            "tables": self.tables,
            "jobs": self.jobs,
            "counters": self.counters,
            "problems": [f.as_dict() for f in self.problems],
            "warnings": [f.as_dict() for f in self.warnings],
            "error": None,
        }


def failure_dict(code: str, message: str, check: str = "full") -> dict[str, Any]:
    """The JSON of a check that could not run (exit 2)."""
    return {"schema_version": SCHEMA_VERSION, "up": False, "check": check, "healthy": False,
            "error": {"code": code, "message": message}}


def recorded_revision(conn: Connection, script: Any) -> str | None:
    """ghostsync's row of alembic_version: the one naming a revision on ghostsync's branch.

    Inside a host project the table holds one row per branch head; a row is
    ghostsync's by membership of the branch (a host's follow-up on it
    included), never by its id's prefix, and a host's row whose revision
    depends on a ghostsync revision holds that one (``chain.standing``). A
    ``ghostsync_`` row this chain does not know means a newer ghostsync
    installed it. The table is found where the host keeps it
    (``ghostsync.version_table``).
    """
    members = chain.branch_revisions(script)
    try:
        table = version_table.find(conn, members)  # in whichever schema the host's env.py keeps it
    except version_table.AmbiguousVersionTable as exc:
        raise StatusError("revision_unknown", str(exc)) from None
    if table is None:
        return None
    rows = list(table.rows)
    # no row of the branch: a host's row can hold one of its revisions through depends_on
    ours = [r for r in rows if r in members] or chain.standing(script, rows)
    if len(ours) > 1:
        raise StatusError("revision_unknown", f"alembic_version holds {len(ours)} rows of ghostsync's branch "
                          f"({', '.join(ours)}): merge the heads and upgrade")
    if ours:
        return ours[0]
    unknown = [r for r in rows if r.startswith("ghostsync_")]
    if unknown:
        raise StatusError("revision_unknown",
                          f"the database is at revision {unknown[0]}, which this ghostsync does not know: upgrade "
                          "ghostsync (or point --alembic-config at the configuration that knows it)")
    if any(not chain.knows(script, r) for r in rows) and \
            conn.execute(text("SELECT to_regclass('ghostsync.objects')")).scalar() is not None:
        raise StatusError("revision_unknown", f"alembic_version holds {', '.join(rows)}, none of which this "
                          "configuration knows as ghostsync's: pass the host project's --alembic-config")
    return None


def _require(conn: Connection, road: roads.Road) -> None:
    checks = conn.execute(text(
        "SELECT to_regclass('auth.users') IS NOT NULL, to_regclass('public.users') IS NOT NULL"
    )).one()
    if not checks[0]:
        raise StatusError("no_auth_schema", "no auth.users in this database: is DATABASE_URL a Supabase database?")
    if not checks[1]:
        raise StatusError("not_installed",
                          f"public.users does not exist: ghostsync is not installed; {road.install}")


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


def _counters(conn: Connection, standby: bool) -> dict[str, Any]:
    """Cumulative figures that cost nothing to read (null where the server does not keep them).

    Monotonic between statistics resets, as Prometheus counters must be: the failed profile writes
    are the rows the sync functions inserted into or updated in the failure ledger (its
    ``sum(failures)`` would fall when ``ghostsync repair`` clears rows)."""
    out: dict[str, Any] = {
        "failed_profile_writes": None,
        "auth_users_inserted": None, "auth_users_deleted": None, "profiles_inserted": None,
        "track_functions": None, "trigger_calls": None, "trigger_seconds": None,
    }
    if standby:
        return out  # pg_stat_* figures are per server: the primary's are not here
    for key, relation in (("auth_users", "auth.users"), ("profiles", "public.users"),
                          ("failures", "ghostsync.sync_failures")):
        row = conn.execute(text(
            "SELECT n_tup_ins, n_tup_del, n_tup_upd FROM pg_stat_user_tables WHERE relid = to_regclass(:r)"
        ), {"r": relation}).first()
        if row is None:
            continue
        if key == "failures":
            out["failed_profile_writes"] = int(row[0]) + int(row[2])
            continue
        out[f"{key}_inserted"] = int(row[0])
        if key == "auth_users":
            out["auth_users_deleted"] = int(row[1])
    track = conn.execute(text("SELECT current_setting('track_functions')")).scalar()
    out["track_functions"] = track
    if track in ("pl", "all"):
        row = conn.execute(text(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(total_time), 0) / 1000.0 FROM pg_stat_user_functions"
            " WHERE schemaname = 'ghostsync'"
        )).one()
        out["trigger_calls"], out["trigger_seconds"] = int(row[0]), float(row[1])
    return out


def collect(conn: Connection, *, quick: bool = False, script: Any = None, road: roads.Road = roads.PACKAGED) -> Status:
    """Gather the status in one read-only transaction; ``quick`` skips the table scans. Advice names the
    commands of ``road`` (``roads.for_config``: the packaged chain's or a host project's)."""
    script = script or chain.script_directory()
    conn.execute(text("SET TRANSACTION READ ONLY"))
    # A role subject to row level security must not count what RLS hides from it (auth.users has RLS on):
    # with row_security off such a query fails (42501) instead of returning fewer rows.
    conn.execute(text("SET LOCAL row_security = off"))
    _require(conn, road)
    revision = recorded_revision(conn, script)
    if revision is None:
        raise StatusError("not_installed", "ghostsync is not installed here (no revision of its branch in "
                          f"alembic_version): {road.install}")
    head = chain.head(script)
    declared = chain.declared_at(revision, script)
    standby = bool(conn.execute(text("SELECT pg_is_in_recovery()")).scalar())
    found = Status(check="quick" if quick else "full", revision=revision, head=head, standby=standby)
    if conn.execute(text("SELECT to_regclass('ghostsync.sync_failures')")).scalar() is not None:
        found.failed_syncs = health.count_failed_syncs(conn)
    if not quick:
        counts = health.full_counts(conn, declared)
        found.ghosts, found.orphans, found.stale_profiles = counts.ghosts, counts.orphans, counts.stale
        found.auth_users, found.profiles = counts.auth_users, counts.profiles
    inspection = drift.inspect(conn, declared)
    found.triggers = {n: s.as_dict() for n, s in inspection.triggers.items()}
    found.functions = {n: s.as_dict() for n, s in inspection.functions.items()}
    found.app_triggers = {n: s.as_dict() for n, s in inspection.app_triggers.items()}
    found.tables = {n: s.as_dict() for n, s in inspection.tables.items()}
    for job in monitored_jobs(declared):
        found.jobs[job] = _last_run(conn, job)
    found.counters = _counters(conn, standby)
    _judge(found, declared, inspection, script, _column_problems(conn, declared) if revision else [], road)
    found.warnings += [Finding(f.code, f.detail) for f in app_triggers.find(conn)]
    return found


def monitored_jobs(declared: Declared) -> list[str]:
    """The jobs whose last run status reports: the revisions' own, then backfill and repair (once each)."""
    return list(dict.fromkeys((*declared.jobs, names.BACKFILL_JOB, names.REPAIR_JOB)))


def _column_problems(conn: Connection, declared: Declared) -> list[str]:
    """What of the sync's columns the profile table cannot take (type, length, NOT NULL)."""
    problems = []
    for column in declared.columns.values():
        row = conn.execute(text(
            "SELECT regexp_replace(format_type(a.atttypid, NULL), '^.*\\.', ''),"
            " CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod > 4"
            "      THEN a.atttypmod - 4 END, a.attnotnull"
            " FROM pg_attribute AS a WHERE a.attrelid = 'public.users'::regclass AND a.attname = :name"
            "   AND a.attnum > 0 AND NOT a.attisdropped"
        ), {"name": column.name}).first()
        if row is None:
            problems.append(f"column {column.name} is missing")
        elif row[1] is not None and column.max_length is not None and row[1] < column.max_length:
            problems.append(f"column {column.name} is {row[0]}({row[1]}), the sync writes up to "
                            f"{column.max_length} characters")
        elif row[2] and column.nullable:
            problems.append(f"column {column.name} is NOT NULL, the sync writes NULL for some users")
    return problems


def reinstall_advice(declared: Declared, key: str, revision: str | None, script: Any,
                     road: roads.Road = roads.PACKAGED) -> str:
    """The commands of ``road`` that put back what revision ``revision`` declares for ``key``."""
    by = declared.declared_by.get(key)
    below = script.get_revision(by).down_revision if by else None
    if not by or not below or not revision:
        return "`ghostsync repair` cannot fix this; reinstall ghostsync"
    return road.reinstall(below, revision)


def _judge(found: Status, declared: Declared, inspection: drift.Inspection, script: Any,
           column_problems: list[str], road: roads.Road) -> None:
    problem, warn = found.problems.append, found.warnings.append
    if found.ghosts:
        problem(Finding("ghosts", f"{found.ghosts} auth user(s) have no profile (ghosts): run `ghostsync repair`"))
    if found.orphans:
        problem(Finding("orphans", f"{found.orphans} profile(s) have no auth user (orphans): run `ghostsync repair`"))
    if found.failed_syncs:
        problem(Finding("failed_syncs", f"{found.failed_syncs} profile write(s) failed and are recorded in "
                        "ghostsync.sync_failures: fix the cause, then run `ghostsync repair`"))
    if found.stale_profiles:
        columns = ", ".join(c.name for c in declared.synced_columns)
        problem(Finding("stale_profiles", f"{found.stale_profiles} profile(s) disagree with auth.users on "
                        f"{columns} (stale): run `ghostsync repair`"))
    for name, state in inspection.triggers.items():
        table = state.table
        if state.state == "missing":
            problem(Finding("trigger_missing", f"trigger {name} on {table} is missing: "
                            + reinstall_advice(declared, name, found.revision, script, road)))
        elif state.state == "not_ghostsyncs":
            problem(Finding("trigger_not_ghostsyncs", f"trigger {name} on {table} was not created by ghostsync "
                            "(not in ghostsync.objects): a trigger of that name replaced ghostsync's"))
        else:
            if state.state == "disabled":
                problem(Finding("trigger_disabled", f"trigger {name} on {table} is disabled: "
                                f"ALTER TABLE {table} ENABLE TRIGGER {name} (as the table's owner), then "
                                "`ghostsync repair` for the writes it missed"))
            elif state.state == "replica_only":
                problem(Finding("trigger_replica_only", f"trigger {name} on {table} fires only in replica mode "
                                "(ENABLE REPLICA), so never for the auth service: ALTER TABLE "
                                f"{table} ENABLE TRIGGER {name}, then `ghostsync repair`"))
            if not state.matches:
                problem(Finding("trigger_drift", f"trigger {name} on {table} differs from what revision "
                                f"{found.revision} declares (edited by hand?): "
                                + reinstall_advice(declared, name, found.revision, script, road)))
    for signature, fstate in inspection.functions.items():
        if fstate.state == "missing":
            problem(Finding("function_missing", f"function {signature} is missing: "
                            + reinstall_advice(declared, signature, found.revision, script, road)))
        elif fstate.state == "not_ghostsyncs":
            problem(Finding("function_not_ghostsyncs", f"function {signature} was not created by ghostsync "
                            "(not in ghostsync.objects)"))
        elif fstate.state == "differs":
            problem(Finding("function_drift", f"function {signature} differs from what revision {found.revision} "
                            f"declares ({'; '.join(fstate.differences)}): "
                            + reinstall_advice(declared, signature, found.revision, script, road)))
    for table, tstate in inspection.tables.items():
        if not tstate.exists:
            continue
        ours = tstate.created is True
        if not tstate.rls and table in ("public.users", "public.cleanup_audit_log"):
            (problem if ours else warn)(Finding(
                "rls_disabled", f"{table} has row level security disabled: anyone with the anon key can "
                "read every row" + ("" if ours else " (an adopted table: the app's decision)")))
        if tstate.open_privileges:
            (problem if ours else warn)(Finding(
                "open_privileges", f"{table} grants {', '.join(tstate.open_privileges)} to end users' roles "
                "(row level security governs neither TRUNCATE, REFERENCES nor TRIGGER, and anon has no business "
                "with ghostsync's tables)" + ("" if ours else "; an adopted table: revoke what end users do not "
                                                              "need")))
    for message in column_problems:
        problem(Finding("profile_table_incompatible", f"public.users cannot take what the sync writes: {message}"))
    if found.revision is not None and found.head is not None and not found.at_head:
        warn(Finding("behind_head", f"the database is at revision {found.revision}, head is {found.head}: "
                     f"{road.newer}"))
    for job, run in found.jobs.items():
        if run and run["status"] in ("failed", "interrupted"):
            warn(Finding(f"job_{run['status']}", f"the last {job} run ended {run['status']} (audit row {run['id']})"))


__all__ = ["SCHEMA_VERSION", "Finding", "Status", "StatusError", "collect", "failure_dict", "recorded_revision"]
