"""``ghostsync status``: is the database free of ghosts, and will it stay so?

``collect`` gathers every figure into a ``Status`` in one read-only
transaction (so it also runs on a hot standby); ``ghostsync.report`` presents
it as text, JSON or Prometheus metrics. The verdict reads the declaration of
the revision the database is at (``chain.declared_at``); every finding comes
from the catalogue (``ghostsync.findings``: codes, severities, messages), in
its order:

- a problem (exit 1): ghosts, orphans, stale profiles, failed syncs whose
  profile has not healed since; a setting that makes the auth service's
  writes skip ghostsync's triggers (``replication_role``); alembic_version
  stamped behind the installed objects (``stamped``); a ghostsync trigger
  missing, disabled, replica-only or not as declared; a ghostsync function
  missing or not as declared (``drift``); an object of ghostsync's name that
  ghostsync did not create; ghostsync's own tables with RLS off or
  privileges open to end users; a profile table that cannot take what the
  sync writes; profiles the app's table stops ghostsync from creating, per
  cause (``adoption_checks``);
- a warning (still healthy): the database is behind head but holds exactly
  what its revision declares; the last run of a job
  failed or was interrupted; what the app opened on ``public.users``, its
  table whether ghostsync created or adopted it (RLS off, open privileges,
  synced columns every end user can read: ``exposure``); what a hard delete
  does on an adopted table (``ghostsync.delete_rules``: its key refuses
  deletes, or the app's rows kept, counted there and not as orphans); synced columns an adopted table lacks,
  which ghostsync leaves out. Counts and comparisons use only the synced
  columns the table has (``profile_shape.fit``).

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

from ghostsync import (
    adoption_checks,
    app_triggers,
    chain,
    delete_rules,
    drift,
    exposure,
    findings,
    health,
    names,
    profile_shape,
    replication_role,
    roads,
    stamped,
    version_table,
)
from ghostsync.chain import Declared
from ghostsync.findings import Finding

SCHEMA_VERSION = 2


class StatusError(RuntimeError):
    """The status could not be checked; ``code`` is stable, the message says why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


def _error(code: findings.Code, **values: Any) -> StatusError:
    return StatusError(code.code, code.message(**values))


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
        raise StatusError(findings.REVISION_UNKNOWN.code, str(exc)) from None
    if table is None:
        return None
    rows = list(table.rows)
    # no row of the branch: a host's row can hold one of its revisions through depends_on
    ours = [r for r in rows if r in members] or chain.standing(script, rows)
    if len(ours) > 1:
        raise _error(findings.REVISION_ROWS, count=len(ours), rows=", ".join(ours))
    if ours:
        return ours[0]
    unknown = [r for r in rows if r.startswith("ghostsync_")]
    if unknown:
        raise _error(findings.REVISION_UNKNOWN, revision=unknown[0])
    if any(not chain.knows(script, r) for r in rows) and \
            conn.execute(text("SELECT to_regclass('ghostsync.objects')")).scalar() is not None:
        raise _error(findings.REVISION_FOREIGN, rows=", ".join(rows))
    return None


def _require(conn: Connection, road: roads.Road) -> None:
    checks = conn.execute(text(
        "SELECT to_regclass('auth.users') IS NOT NULL, to_regclass('public.users') IS NOT NULL"
    )).one()
    if not checks[0]:
        raise _error(findings.NO_AUTH_SCHEMA)
    if not checks[1]:
        raise _error(findings.NOT_INSTALLED, install=road.install)


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
        raise _error(findings.NOT_RECORDED, install=road.install)
    head = chain.head(script)
    full = chain.declared_at(revision, script)
    declared = profile_shape.fit(conn, full)  # the synced columns the table has (an adopted table may lack some)
    standby = bool(conn.execute(text("SELECT pg_is_in_recovery()")).scalar())
    found = Status(check="quick" if quick else "full", revision=revision, head=head, standby=standby)
    if conn.execute(text("SELECT to_regclass('ghostsync.sync_failures')")).scalar() is not None:
        found.failed_syncs = health.count_failed_syncs(conn, declared)
    if not quick:
        counts = health.full_counts(conn, declared)
        found.ghosts, found.orphans, found.stale_profiles = counts.ghosts, counts.orphans, counts.stale
        found.auth_users, found.profiles = counts.auth_users, counts.profiles
    key, kept = None, None
    if delete_rules.applies(declared):  # the app's rows kept are not orphans; what the app's key does
        key = delete_rules.read(conn)
        found.orphans, kept = delete_rules.split_orphans(key, found.orphans)
    inspection = drift.inspect(conn, declared)
    found.triggers = {n: s.as_dict() for n, s in inspection.triggers.items()}
    found.functions = {n: s.as_dict() for n, s in inspection.functions.items()}
    found.app_triggers = {n: s.as_dict() for n, s in inspection.app_triggers.items()}
    found.tables = {n: s.as_dict() for n, s in inspection.tables.items()}
    for job in monitored_jobs(declared):
        found.jobs[job] = _last_run(conn, job)
    found.counters = _counters(conn, standby)
    checked = Checked(
        skipping=replication_role.skipping_settings(conn),
        stamped=_stamped(conn, revision, script),
        exposed=exposure.exposed(conn, list(declared.columns)),
        key=key,
        kept=kept,
        app_triggers=app_triggers.find(conn),
        keyed=app_triggers.find_keyed(conn),
        uncreatable=adoption_checks.profiles_cannot_be_created(conn),
        absent=adoption_checks.columns_left_out(conn, full),
    )
    _judge(found, declared, inspection, script, _column_problems(conn, declared), road, checked)
    return found


@dataclass(frozen=True)
class Checked:
    """What the checks beyond drift found: settings that skip the triggers (``replication_role``), a
    stamp behind the installed objects (``stamped``), synced columns end users can read (``exposure``),
    what a hard delete does (``delete_rules``: the key on id, the app's rows kept), the app's triggers
    that write profiles or rows keyed to one not written yet (``app_triggers``), profiles that cannot be
    created and synced columns the table lacks (``adoption_checks``)."""

    skipping: list[dict[str, Any]]
    stamped: tuple[str, str] | None
    exposed: dict[str, Any] | None
    key: delete_rules.ProfileKey | None = None
    kept: int | None = None
    keyed: list[app_triggers.KeyedTrigger] = field(default_factory=list)
    app_triggers: list[app_triggers.AppTrigger] = field(default_factory=list)
    uncreatable: list[adoption_checks.Uncreatable] = field(default_factory=list)
    absent: tuple[list[str], str] | None = None


def _stamped(conn: Connection, revision: str, script: Any) -> tuple[str, str] | None:
    later = stamped.later_objects(revision, script)
    if not later:
        return None
    bodies = {o["name"]: conn.execute(text("SELECT p.prosrc FROM pg_catalog.pg_proc AS p "
                                           "WHERE p.oid = pg_catalog.to_regprocedure(:s)"), {"s": o["name"]}).scalar()
              for o in later if o["kind"] == "function"}
    triggers = {(r["name"], r["table_name"]): r["definition"] for r in drift.trigger_rows(conn)}
    return stamped.newest_installed(later, bodies, triggers)


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
           column_problems: list[str], road: roads.Road, checked: Checked) -> None:
    """Each finding from the catalogue (``ghostsync.findings``), in its order."""
    def add(code: findings.Code, table: str | None = None, adopted: bool = False, **values: Any) -> None:
        if code.severity == findings.BY_TABLE and table is not None:
            values["whose"] = code.whose_for(table, adopted)
        out = found.problems if code.severity_for(table, adopted) == findings.PROBLEM else found.warnings
        out.append(code.finding(table=table, **values) if table is not None else code.finding(**values))

    if found.ghosts:
        add(findings.GHOSTS, count=found.ghosts)
    if found.orphans:
        add(findings.ORPHANS, count=found.orphans)
    if checked.kept:
        add(findings.APP_ROWS_KEPT, count=checked.kept)
    if checked.key is not None and checked.key.refuses_deletes:
        add(findings.APP_KEY_REFUSES_DELETES, key=checked.key.name, on_delete=checked.key.on_delete)
    if found.failed_syncs:
        add(findings.FAILED_SYNCS, count=found.failed_syncs)
    if found.stale_profiles:
        add(findings.STALE_PROFILES, count=found.stale_profiles,
            columns=", ".join(c.name for c in declared.synced_columns))
    for setting in checked.skipping:
        add(findings.AUTH_WRITES_SKIP_TRIGGERS, setting=setting["setting"], value=setting["value"],
            reset=setting["reset"])
    if checked.stamped is not None:
        add(findings.STAMPED_BEHIND, later=checked.stamped[0], objects=checked.stamped[1], revision=found.revision)
    for name, state in inspection.triggers.items():
        advice = reinstall_advice(declared, name, found.revision, script, road)
        if state.state == "missing":
            add(findings.TRIGGER_MISSING, name=name, table=state.table, advice=advice)
        elif state.state == "not_ghostsyncs":
            add(findings.TRIGGER_NOT_GHOSTSYNCS, name=name, table=state.table)
        else:
            if state.state == "disabled":
                add(findings.TRIGGER_DISABLED, name=name, table=state.table)
            elif state.state == "replica_only":
                add(findings.TRIGGER_REPLICA_ONLY, name=name, table=state.table)
            if not state.matches:
                add(findings.TRIGGER_DRIFT, name=name, table=state.table, revision=found.revision, advice=advice)
    for app in checked.app_triggers:
        add(findings.APP_TRIGGER_WRITES_PROFILES, trigger=app.trigger, function=app.function)
    for keyed in checked.keyed:
        add(findings.APP_KEY_CHECKED_BEFORE_PROFILE, trigger=keyed.trigger, function=keyed.function,
            referencing=keyed.referencing, key=keyed.key)
    for signature, fstate in inspection.functions.items():
        advice = reinstall_advice(declared, signature, found.revision, script, road)
        if fstate.state == "missing":
            add(findings.FUNCTION_MISSING, signature=signature, advice=advice)
        elif fstate.state == "not_ghostsyncs":
            add(findings.FUNCTION_NOT_GHOSTSYNCS, signature=signature)
        elif fstate.state == "differs":
            add(findings.FUNCTION_DRIFT, signature=signature, revision=found.revision,
                differences="; ".join(fstate.differences), advice=advice)
    for table, tstate in inspection.tables.items():
        if not tstate.exists:
            continue
        adopted = tstate.created is not True
        if not tstate.rls and table in (names.PROFILES, names.AUDIT_LOG):
            add(findings.RLS_DISABLED, table, adopted)
        if tstate.open_privileges:
            add(findings.OPEN_PRIVILEGES, table, adopted, privileges=", ".join(tstate.open_privileges))
        if table == names.PROFILES and checked.exposed is not None:
            add(findings.SYNCED_COLUMNS_READABLE, table, **checked.exposed)
    for message in column_problems:
        add(findings.PROFILE_TABLE_INCOMPATIBLE, reason=message)
    for uncreatable in checked.uncreatable:
        add(findings.PROFILE_CANNOT_BE_CREATED, count=uncreatable.count, why=uncreatable.why)
    if checked.absent is not None:
        add(findings.SYNCED_COLUMNS_ABSENT, columns=", ".join(checked.absent[0]), why=checked.absent[1])
    if found.revision is not None and found.head is not None and not found.at_head:
        add(findings.BEHIND_HEAD, revision=found.revision, head=found.head, newer=road.newer)
    for job, run in found.jobs.items():
        if run and run["status"] in findings.JOB_ENDED:
            add(findings.JOB_ENDED[run["status"]], job=job, id=run["id"])


__all__ = ["SCHEMA_VERSION", "Finding", "Status", "StatusError", "collect", "failure_dict", "recorded_revision"]
