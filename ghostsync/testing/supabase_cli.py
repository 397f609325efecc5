"""Apply a ``supabase/migrations`` folder the way the Supabase CLI does (``db push``, ``db reset``).

Written from the source of supabase/cli (its Go engine, ``apps/cli-go``) and its
documented behaviour:

- **Which files** (``pkg/migration/file.go``, ``list.go``): the names in the folder matching
  ``^([0-9]+)_(.*)\\.sql$``, in byte-wise name order, not recursive; version = the digits
  (compared as *strings*), name = the rest. Anything else is skipped with a message.
- **Which are pending** (``pkg/migration/apply.go`` ``FindPendingMigrations``, ``internal/migration/
  up/up.go``): the remote history (``supabase_migrations.schema_migrations``) and the local
  versions are walked side by side; a remote version missing locally, or a local one older
  than the newest remote one and not applied, refuses the push (``--include-all`` applies
  the latter first).
- **How a file is split** (``pkg/parser/token.go``, ``state.go``): ``split`` below, a scanner
  of our own over the rules those files implement (quotes, dollar quotes, comments,
  backslash escapes, parentheses, ``BEGIN ATOMIC`` bodies, ``;``), quirks included.
- **How a file is run** (``pkg/migration/apply.go`` ``ApplyMigrations``, ``file.go`` ``ExecBatch``,
  ``history.go``): once, the history table is created; then per file ``RESET ALL`` (simple
  protocol), and every statement of the file plus ``INSERT INTO supabase_migrations.
  schema_migrations(version, name, statements) VALUES($1, $2, $3)`` as ONE pipeline with a
  single Sync: one implicit transaction that is not a transaction block. So ``SET LOCAL``
  warns (25P01) and ``LOCK TABLE``/``SAVEPOINT`` fail; an error anywhere rolls back the file
  and its history row, and applying stops there (the files before it stay committed).
  psycopg 3's pipeline mode sends exactly these messages (Parse/Bind/Describe/Execute per
  statement, one Sync), so the server behaves as it does for the Go CLI.
- **What is printed** (``pkg/pgxv5/connect.go``): every NOTICE/WARNING as ``SEVERITY (CODE):
  message``, except the history table's own "already exists" notices.

Newer CLI releases (the TypeScript port) wrap each file in BEGIN/COMMIT instead; files that
apply cleanly here (no warning, no transaction control) apply there too.

    result = supabase_cli.push(db.url(), folder)      # db push against a live database
    assert result.ok and not result.warnings, result.text
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostsync.supabase_parser import split, split_and_trim

MIGRATION_FILE = re.compile(r"^([0-9]+)_(.*)\.sql$")
HISTORY_TABLE = "supabase_migrations.schema_migrations"
INSERT_VERSION = f"INSERT INTO {HISTORY_TABLE}(version, name, statements) VALUES($1, $2, $3)"
# CreateMigrationTable: one batch, run once before the first file.
CREATE_HISTORY = (
    "SET lock_timeout = '4s'",
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (version text NOT NULL PRIMARY KEY)",
    f"ALTER TABLE {HISTORY_TABLE} ADD COLUMN IF NOT EXISTS statements text[]",
    f"ALTER TABLE {HISTORY_TABLE} ADD COLUMN IF NOT EXISTS name text",
)
# pkg/pgxv5/connect.go shouldIgnore
IGNORED_NOTICES = ('schema "supabase_migrations" already exists', 'relation "schema_migrations" already exists',
                   'relation "seed_files" already exists')
ERR_MISSING_LOCAL = "Remote migration versions not found in local migrations directory."
ERR_MISSING_REMOTE = "Found local migration files to be inserted before the last migration on remote database."


# -- which files, which are pending ---------------------------------------------------------------

@dataclass(frozen=True)
class Migration:
    path: Path
    version: str
    name: str


def local_migrations(folder: Path, skipped: list[str] | None = None) -> list[Migration]:
    """The migration files of ``folder`` in the CLI's order; what it skips goes to ``skipped``."""
    found = []
    entries = sorted(folder.iterdir(), key=lambda p: p.name.encode()) if folder.is_dir() else []
    for index, path in enumerate(entries):
        if path.is_dir():
            continue
        if index == 0 and re.fullmatch(r"([0-9]{14})_init\.sql", path.name) and path.name[:14] < "20211209000000":
            if skipped is not None:
                skipped.append(f"Skipping migration {path.name}... (replace \"init\" with a different file name "
                               "to apply this migration)")
            continue
        match = MIGRATION_FILE.match(path.name)
        if match is None:
            if skipped is not None:
                skipped.append(f"Skipping migration {path.name}... (file name must match pattern "
                               "\"<timestamp>_name.sql\")")
            continue
        found.append(Migration(path, match.group(1), match.group(2)))
    return found


class PushRefused(Exception):
    """The CLI refuses to push (its ErrMissingLocal / ErrMissingRemote); nothing was applied."""


def find_pending(local: list[Migration], remote: list[str], *, include_all: bool = False) -> list[Migration]:
    """``FindPendingMigrations`` then ``GetPendingMigrations``: the files ``db push`` would apply, in order."""
    i = j = 0
    missing: list[str] = []
    out_of_order: list[Migration] = []
    while i < len(local) and j < len(remote):
        if local[i].version == remote[j]:
            i += 1
            j += 1
        elif remote[j] < local[i].version:  # versions compare as strings
            missing.append(remote[j])
            j += 1
        else:
            out_of_order.append(local[i])
            i += 1
    missing.extend(remote[j:])
    if missing:
        raise PushRefused(ERR_MISSING_LOCAL + " (" + ", ".join(missing) + ")")
    if out_of_order and not include_all:
        raise PushRefused(ERR_MISSING_REMOTE + "\n\nRerun the command with --include-all flag to apply these "
                          "migrations:\n" + "\n".join(str(m.path) for m in out_of_order) + "\n")
    return out_of_order + local[i:]


# -- running files ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Notice:
    severity: str
    sqlstate: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity} ({self.sqlstate}): {self.message}"


@dataclass
class FileResult:
    migration: Migration
    statements: list[str]
    notices: list[Notice] = field(default_factory=list)
    error: Notice | None = None
    failed_statement: int | None = None  # 0-based index; len(statements) is the history insert

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class PushResult:
    files: list[FileResult] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None and all(f.ok for f in self.files)

    @property
    def notices(self) -> list[Notice]:
        return [n for f in self.files for n in f.notices]

    @property
    def warnings(self) -> list[Notice]:
        return [n for n in self.notices if n.severity == "WARNING"]

    @property
    def failed(self) -> FileResult | None:
        return next((f for f in self.files if not f.ok), None)

    @property
    def text(self) -> str:
        """What the CLI would print (on standard error)."""
        return "\n".join(self.lines)


def _connect(url: str) -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the testing extra installs it
        raise RuntimeError("the Supabase CLI harness needs psycopg 3 (pip install 'ghostsync[testing]')") from exc
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def remote_versions(conn: Any) -> list[str]:
    """The applied versions, in order; none when the history table does not exist yet."""
    if conn.execute("SELECT to_regclass('supabase_migrations.schema_migrations')").fetchone()[0] is None:
        return []
    return [row[0] for row in conn.execute(f"SELECT version FROM {HISTORY_TABLE} ORDER BY version")]


def _batch(conn: Any, statements: Iterable[tuple[str, Any]]) -> tuple[int, Any]:
    """Send ``statements`` as one pipeline with one Sync; (number that succeeded, the error or None)."""
    import psycopg

    cursors = []
    try:
        with conn.pipeline():
            for sql, params in statements:
                cur = conn.cursor()
                cur.execute(sql, params, prepare=False)
                cursors.append(cur)
    except psycopg.Error as exc:
        done = next((n for n, cur in enumerate(cursors) if cur.pgresult is None), len(cursors))
        return done, exc
    return len(cursors), None


def apply_files(url: str, migrations: list[Migration], result: PushResult | None = None) -> PushResult:
    """``ApplyMigrations``: the history table once, then each file in its own pipeline; stops at
    the first file that fails (the ones before it stay applied)."""
    result = result if result is not None else PushResult()
    if not migrations:
        return result
    conn = _connect(url)
    current: list[Notice] = []

    def on_notice(diag: Any) -> None:
        message = diag.message_primary or ""
        if not any(ignored in message for ignored in IGNORED_NOTICES):
            notice = Notice(diag.severity or "", diag.sqlstate or "", message)
            current.append(notice)
            result.lines.append(str(notice))

    conn.add_notice_handler(on_notice)
    try:
        done, error = _batch(conn, ((sql, None) for sql in CREATE_HISTORY))
        if error is not None:
            raise error
        for migration in migrations:
            result.lines.append(f"Applying migration {migration.path.name}...")
            conn.execute("RESET ALL")  # no parameters: the simple protocol, as pgx sends it
            statements = split_and_trim(migration.path.read_text())
            current.clear()
            batch: list[tuple[str, Any]] = [(sql, None) for sql in statements]
            batch.append((INSERT_VERSION.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s"),
                          (migration.version, migration.name, statements or None)))
            done, error = _batch(conn, batch)
            outcome = FileResult(migration, statements, list(current))
            result.files.append(outcome)
            if error is not None:
                diag = error.diag
                outcome.error = Notice("ERROR", diag.sqlstate or "", diag.message_primary or str(error))
                outcome.failed_statement = done
                failing = statements[done] if done < len(statements) else INSERT_VERSION
                result.lines.append(f"ERROR: {outcome.error.message} (SQLSTATE {outcome.error.sqlstate})\n"
                                    f"At statement: {done}\n{failing}")
                return result
    finally:
        conn.close()
    return result


def push(url: str, folder: Path, *, include_all: bool = False) -> PushResult:
    """``supabase db push``: apply the files of ``folder`` the remote history does not list."""
    result = PushResult()
    skipped: list[str] = []
    local = local_migrations(folder, skipped)
    result.lines.extend(skipped)
    conn = _connect(url)
    try:
        remote = remote_versions(conn)
    finally:
        conn.close()
    try:
        pending = find_pending(local, remote, include_all=include_all)
    except PushRefused as exc:
        result.refused = str(exc)
        result.lines.append(str(exc))
        return result
    if not pending:
        result.lines.append("Remote database is up to date.")
        return result
    apply_files(url, pending, result)
    if result.ok:
        result.lines.append("Finished supabase db push.")
    return result


def reset(url: str, folder: Path) -> PushResult:
    """What ``supabase db reset`` does after recreating the database: every local file, in order,
    with no comparison against a history (run it on a fresh database)."""
    result = PushResult()
    skipped: list[str] = []
    local = local_migrations(folder, skipped)
    result.lines.extend(skipped)
    return apply_files(url, local, result)


def apply_sql(url: str, sql: str, *, version: str = "", name: str = "") -> PushResult:
    """One script run as the CLI runs one file (``RESET ALL``, one pipeline); with an empty
    ``version`` no history row is written (as for ``roles.sql``)."""
    result = PushResult()
    conn = _connect(url)
    current: list[Notice] = []
    conn.add_notice_handler(lambda d: current.append(Notice(d.severity or "", d.sqlstate or "",
                                                            d.message_primary or "")))
    try:
        conn.execute("RESET ALL")
        statements = split_and_trim(sql)
        batch: list[tuple[str, Any]] = [(s, None) for s in statements]
        if version:
            batch.append((INSERT_VERSION.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s"),
                          (version, name, statements or None)))
        done, error = _batch(conn, batch)
        outcome = FileResult(Migration(Path(f"{version or 'script'}_{name}.sql"), version, name), statements,
                             current)
        if error is not None:
            outcome.error = Notice("ERROR", error.diag.sqlstate or "", error.diag.message_primary or str(error))
            outcome.failed_statement = done
        result.files.append(outcome)
        result.lines.extend(str(n) for n in current)
    finally:
        conn.close()
    return result


__all__ = [
    "ERR_MISSING_LOCAL",
    "ERR_MISSING_REMOTE",
    "HISTORY_TABLE",
    "FileResult",
    "Migration",
    "Notice",
    "PushRefused",
    "PushResult",
    "apply_files",
    "apply_sql",
    "find_pending",
    "local_migrations",
    "push",
    "remote_versions",
    "reset",
    "split",
    "split_and_trim",
]
