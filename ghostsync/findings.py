"""The catalogue of findings: every code ``ghostsync status`` can report, in one place.

Each ``Code`` holds what is true of a finding wherever it is shown: its code string, its
severity, its message (a ``str.format`` template whose fields the check that finds it fills)
and whether only the full check can see it. Everything that shows findings renders them
from here and names no code string of its own (``tests/test_findings.py`` fails if a code
appears in a second module of ``ghostsync/``):

- ``status`` (text and JSON) builds each finding with ``Code.finding``;
- ``verify-sql`` (``ghostsync.verify``) builds each message in SQL with ``Code.sql_message``,
  the code with ``Code.sql_code`` and the severity with ``Code.sql_severity``, and orders the
  findings by ``Code.rank`` as ``status`` does;
- the Prometheus textfile (``ghostsync.report``) exports a series for each of
  ``PROBLEM_CODES`` and ``WARNING_CODES`` (``FULL_ONLY_CODES`` are NaN in the quick check);
- the pgTAP file (``ghostsync.pgtap``) tests no code, but what it checks of a function and of the
  auth role's settings is the SQL status's checks use (``drift``, ``replication_role``);
- the alert rules in ``monitoring/`` name codes that ``tests/test_findings.py`` checks
  against this catalogue.

Severities: ``PROBLEM`` (unhealthy, exit 1), ``WARNING`` (healthy), and ``BY_TABLE``: a warning
on the app's tables, a problem on ghostsync's own, which stay closed. The profile table
(``APP_TABLE``) is the app's whether ghostsync created or adopted it (what is open there is the
app's decision); another table is the app's when ghostsync adopted it (an app's own
``cleanup_audit_log``).

``ERRORS`` are the codes of a check that could not run (exit 2, ``up`` false).

The advice a message gives names the commands of the team's road (``ghostsync.roads``): the
check passes the road's sentence in as a field (``advice``, ``newer``, ``install``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

PROBLEM = "problem"
WARNING = "warning"
BY_TABLE = "by_table"
APP_TABLE = "public.users"  # the profile table: the app's, whether ghostsync created or adopted it


@dataclass(frozen=True)
class Finding:
    """One finding as status reports it."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Code:
    """A code of the catalogue. ``template``'s ``{fields}`` are what the check fills in; ``rank``
    orders findings (group, then position in its group: the checks emit them object by object)."""

    code: str
    severity: str
    template: str
    rank: tuple[int, int]
    full_only: bool = False
    # BY_TABLE: what the message adds on each side (problem, warning), as its {whose} field
    whose: tuple[str, str] = ("", "")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(self.template) if f))

    def severity_for(self, table: str | None = None, adopted: bool = False) -> str:
        """``problem`` or ``warning`` (for ``BY_TABLE``, of the finding on ``table``, ``adopted`` or created
        by ghostsync)."""
        if self.severity == BY_TABLE:
            return WARNING if table == APP_TABLE or adopted else PROBLEM
        return self.severity

    def message(self, **values: Any) -> str:
        return self.template.format(**values)

    def whose_for(self, table: str, adopted: bool = False) -> str:
        """The ``{whose}`` field of a ``BY_TABLE`` finding on ``table``."""
        return self.whose[self.severity_for(table, adopted) == WARNING]

    def finding(self, **values: Any) -> Finding:
        return Finding(self.code, self.message(**values))

    # -- the same, as SQL (for the verification script) -------------------------------------

    @property
    def sql_code(self) -> str:
        return sql_literal(self.code)

    def sql_severity(self, table: str = "NULL", adopted: str = "false") -> str:
        """The severity as an SQL expression (``table``, ``adopted``: SQL expressions of the finding's table
        and whether ghostsync adopted it)."""
        if self.severity == BY_TABLE:
            return (f"CASE WHEN {table} = {sql_literal(APP_TABLE)} OR {adopted} THEN {sql_literal(WARNING)} "
                    f"ELSE {sql_literal(PROBLEM)} END")
        return sql_literal(self.severity)

    def sql_whose(self, table: str, adopted: str = "false") -> str:
        """``whose_for`` as an SQL expression."""
        return (f"CASE WHEN {table} = {sql_literal(APP_TABLE)} OR {adopted} THEN {sql_literal(self.whose[1])} "
                f"ELSE {sql_literal(self.whose[0])} END")

    def sql_message(self, **expressions: str) -> str:
        """The message as an SQL expression: ``pg_catalog.format`` of the template, each field the SQL
        expression given for it (text; NULL renders as the empty string, as ``format``'s %s does)."""
        missing = set(self.fields) - set(expressions)
        if missing:
            raise ValueError(f"{self.code}: no SQL for {', '.join(sorted(missing))}")
        pieces: list[str] = []
        args: list[str] = []
        for literal, field, _, _ in string.Formatter().parse(self.template):
            pieces.append(literal.replace("%", "%%"))
            if field:
                pieces.append("%s")
                args.append(expressions[field])
        return f"pg_catalog.format({sql_literal(''.join(pieces))}{''.join(', ' + a for a in args)})"


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# -- the findings, in the order status reports them ------------------------------------------------

GHOSTS = Code("ghosts", PROBLEM, "{count} auth user(s) have no profile (ghosts): run `ghostsync repair`",
              (1, 0), full_only=True)
ORPHANS = Code("orphans", PROBLEM, "{count} profile(s) have no auth user (orphans): run `ghostsync repair`",
               (2, 0), full_only=True)
# What a hard delete does on an adopted public.users (ghostsync.delete_rules): the app's rule, a warning.
APP_ROWS_KEPT = Code(
    "app_rows_kept", WARNING,
    "{count} profile(s) outlive their deleted account: public.users (the app's table) has no foreign key on id to "
    "auth.users, so ghostsync leaves these rows to the app and `ghostsync repair` does not delete them", (2, 1),
    full_only=True)
APP_KEY_REFUSES_DELETES = Code(
    "app_key_refuses_deletes", WARNING,
    "public.users's foreign key {key} (id -> auth.users, ON DELETE {on_delete}) refuses a hard delete of an account "
    "while its profile exists (the auth service's anonymous-user cleanup included), as it does without ghostsync: "
    "the app's rule, which ghostsync keeps; with ON DELETE CASCADE the profile would go with its account", (2, 2))
FAILED_SYNCS = Code("failed_syncs", PROBLEM,
                    "{count} profile write(s) failed and are recorded in ghostsync.sync_failures: fix the cause, "
                    "then run `ghostsync repair`", (3, 0))
STALE_PROFILES = Code("stale_profiles", PROBLEM,
                      "{count} profile(s) disagree with auth.users on {columns} (stale): run `ghostsync repair`",
                      (4, 0), full_only=True)
AUTH_WRITES_SKIP_TRIGGERS = Code(
    "auth_writes_skip_triggers", PROBLEM,
    "{setting} sets session_replication_role = {value}, so the auth service's writes skip ghostsync's triggers "
    "(and foreign-key checks): every signup becomes a ghost. {reset}, then `ghostsync repair` (making the triggers "
    "ENABLE ALWAYS is no cure: replication and restores run in replica mode on purpose)", (5, 0))
STAMPED_BEHIND = Code(
    "stamped_behind", PROBLEM,
    "the database holds what revision {later} declares ({objects}), but alembic_version says {revision}: "
    "stamped back by mistake? Status judges against {revision}'s declaration; record the revision the objects "
    "are at (`stamp {later}` with the tool that migrates this database)", (6, 0))
TRIGGER_MISSING = Code("trigger_missing", PROBLEM, "trigger {name} on {table} is missing: {advice}", (7, 1))
TRIGGER_NOT_GHOSTSYNCS = Code(
    "trigger_not_ghostsyncs", PROBLEM, "trigger {name} on {table} was not created by ghostsync (not in "
    "ghostsync.objects): a trigger of that name replaced ghostsync's", (7, 1))
TRIGGER_DISABLED = Code(
    "trigger_disabled", PROBLEM, "trigger {name} on {table} is disabled: ALTER TABLE {table} ENABLE TRIGGER {name} "
    "(as the table's owner), then `ghostsync repair` for the writes it missed", (7, 2))
TRIGGER_REPLICA_ONLY = Code(
    "trigger_replica_only", PROBLEM, "trigger {name} on {table} fires only in replica mode (ENABLE REPLICA), so "
    "never for the auth service: ALTER TABLE {table} ENABLE TRIGGER {name}, then `ghostsync repair`", (7, 2))
TRIGGER_DRIFT = Code("trigger_drift", PROBLEM, "trigger {name} on {table} differs from what revision {revision} "
                     "declares (edited by hand?): {advice}", (7, 3))
# An app trigger on auth.users whose function's text writes public.users (ghostsync.app_triggers: a heuristic).
APP_TRIGGER_WRITES_PROFILES = Code(
    "app_trigger_writes_profiles", WARNING,
    "app trigger {trigger} on auth.users (function {function}) writes public.users: ghostsync writes only its synced "
    "columns of that profile, at COMMIT after the app's write (a match on the function's text)", (8, 0))
# An app trigger on auth.users that inserts a row whose key to public.users is checked before ghostsync writes the
# profile at COMMIT (ghostsync.app_triggers: a heuristic): every signup fails.
APP_KEY_CHECKED_BEFORE_PROFILE = Code(
    "app_key_checked_before_profile", PROBLEM,
    "app trigger {trigger} on auth.users (function {function}) inserts into {referencing}, whose key {key} to "
    "public.users is checked at once, before ghostsync writes the profile at COMMIT: every signup fails there; "
    "make the key checked at COMMIT (ALTER TABLE {referencing} ALTER CONSTRAINT {key} DEFERRABLE INITIALLY "
    "DEFERRED), or let the trigger insert the profile first (INSERT INTO public.users (id) VALUES (new.id) ON "
    "CONFLICT (id) DO NOTHING) (a match on the function's text)", (8, 1))
FUNCTION_MISSING = Code("function_missing", PROBLEM, "function {signature} is missing: {advice}", (9, 1))
FUNCTION_NOT_GHOSTSYNCS = Code("function_not_ghostsyncs", PROBLEM,
                               "function {signature} was not created by ghostsync (not in ghostsync.objects)", (9, 1))
FUNCTION_DRIFT = Code("function_drift", PROBLEM, "function {signature} differs from what revision {revision} "
                      "declares ({differences}): {advice}", (9, 1))
RLS_DISABLED = Code("rls_disabled", BY_TABLE, "{table} has row level security disabled: anyone with the anon key "
                    "can read every row{whose}", (10, 1),
                    whose=("", " (the app's table: its decision)"))
OPEN_PRIVILEGES = Code("open_privileges", BY_TABLE, "{table} grants {privileges} to end users' roles (row level "
                       "security governs neither TRUNCATE, REFERENCES nor TRIGGER, and anon has no business with "
                       "ghostsync's tables){whose}", (10, 2),
                       whose=("", "; the app's table: revoke what end users do not need"))
SYNCED_COLUMNS_READABLE = Code(
    "synced_columns_readable", WARNING,
    "{table} lets {roles} read every row's {columns} ({because}): close them with column privileges, e.g. "
    "{close} (what the app reads of them for a user's own row, such as the email, comes from the session "
    "instead: auth.jwt() ->> 'email')", (10, 3))
PROFILE_TABLE_INCOMPATIBLE = Code("profile_table_incompatible", PROBLEM,
                                  "public.users cannot take what the sync writes: {reason}", (11, 0))
# An adopted public.users (ghostsync.adoption_checks): profiles its table stops ghostsync creating, per cause,
# and the synced columns it lacks (left out).
PROFILE_CANNOT_BE_CREATED = Code(
    "profile_cannot_be_created", PROBLEM,
    "{count} profile(s) cannot be created: {why}; ghostsync writes only its synced columns, never an app column: "
    "let the app's table take a row of them (or let the app create these profiles), then run `ghostsync repair`",
    (12, 0))
SYNCED_COLUMNS_ABSENT = Code(
    "synced_columns_absent", WARNING,
    "public.users has no column {columns}: ghostsync syncs only the synced columns it has ({why})", (13, 0))
BEHIND_HEAD = Code("behind_head", WARNING, "the database is at revision {revision}, head is {head}: {newer}", (14, 0))
JOB_FAILED = Code("job_failed", WARNING, "the last {job} run ended failed (audit row {id})", (15, 0))
JOB_INTERRUPTED = Code("job_interrupted", WARNING, "the last {job} run ended interrupted (audit row {id})", (15, 0))

# The rank orders status's list and verify-sql's alike: a new code takes the rank of its check (a new group a
# rank between its neighbours'); status adds it with ``add(code, ...)`` in ``status._judge`` and verify-sql
# renders it with one ``_finding(...)`` in ``verify._findings_sql``.
FINDINGS: tuple[Code, ...] = (
    GHOSTS, ORPHANS, APP_ROWS_KEPT, APP_KEY_REFUSES_DELETES, FAILED_SYNCS, STALE_PROFILES, AUTH_WRITES_SKIP_TRIGGERS,
    STAMPED_BEHIND, TRIGGER_MISSING, TRIGGER_NOT_GHOSTSYNCS, TRIGGER_DISABLED, TRIGGER_REPLICA_ONLY, TRIGGER_DRIFT,
    APP_TRIGGER_WRITES_PROFILES, APP_KEY_CHECKED_BEFORE_PROFILE,
    FUNCTION_MISSING, FUNCTION_NOT_GHOSTSYNCS, FUNCTION_DRIFT,
    RLS_DISABLED, OPEN_PRIVILEGES, SYNCED_COLUMNS_READABLE, PROFILE_TABLE_INCOMPATIBLE, PROFILE_CANNOT_BE_CREATED,
    SYNCED_COLUMNS_ABSENT, BEHIND_HEAD, JOB_FAILED, JOB_INTERRUPTED,
)
# A job's last run that ended so: its warning.
JOB_ENDED = {"failed": JOB_FAILED, "interrupted": JOB_INTERRUPTED}

# -- a check that could not run (exit 2) ------------------------------------------------------------

NO_AUTH_SCHEMA = Code("no_auth_schema", PROBLEM,
                      "no auth.users in this database: is DATABASE_URL a Supabase database?", (0, 0))
NOT_INSTALLED = Code("not_installed", PROBLEM, "public.users does not exist: ghostsync is not installed; {install}",
                     (0, 0))
NOT_RECORDED = Code("not_installed", PROBLEM, "ghostsync is not installed here (no revision of its branch in "
                    "alembic_version): {install}", (0, 0))
REVISION_UNKNOWN = Code("revision_unknown", PROBLEM,
                        "the database is at revision {revision}, which this ghostsync does not know: upgrade "
                        "ghostsync (or point --alembic-config at the configuration that knows it)", (0, 0))
REVISION_ROWS = Code("revision_unknown", PROBLEM, "alembic_version holds {count} rows of ghostsync's branch "
                     "({rows}): merge the heads and upgrade", (0, 0))
REVISION_FOREIGN = Code("revision_unknown", PROBLEM, "alembic_version holds {rows}, none of which this "
                        "configuration knows as ghostsync's: pass the host project's --alembic-config", (0, 0))
ERRORS: tuple[Code, ...] = (NO_AUTH_SCHEMA, NOT_INSTALLED, NOT_RECORDED, REVISION_UNKNOWN, REVISION_ROWS,
                            REVISION_FOREIGN)

PROBLEM_CODES = tuple(dict.fromkeys(
    [NOT_INSTALLED.code] + [c.code for c in FINDINGS if c.severity in (PROBLEM, BY_TABLE)]))
WARNING_CODES = tuple(dict.fromkeys(c.code for c in FINDINGS if c.severity in (WARNING, BY_TABLE)))
FULL_ONLY_CODES = tuple(c.code for c in FINDINGS if c.full_only)
CODES = tuple(dict.fromkeys([*(c.code for c in FINDINGS), *(c.code for c in ERRORS)]))


__all__ = [
    "APP_TABLE", "BY_TABLE", "CODES", "ERRORS", "FINDINGS", "FULL_ONLY_CODES", "PROBLEM", "PROBLEM_CODES",
    "WARNING", "WARNING_CODES", "Code", "Finding", "sql_literal",
]
