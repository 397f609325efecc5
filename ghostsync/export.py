"""``ghostsync export-supabase DIR``: ghostsync's chain as Supabase CLI migration files.

``DIR`` is the team's ``supabase/migrations``. Written there, once per revision of
ghostsync's branch, ``<YYYYMMDDHHMMSS>_ghostsync_<revision file>.sql``; next to it (not
inside: the CLI would take them for migrations) ``DIR/../verify-trigger.sql`` (the
read-only verification script, ``ghostsync.verify``) and ``DIR/../tests/database/
ghostsync.test.sql`` (the pgTAP file ``supabase test db`` runs, ``ghostsync.pgtap``).
``--rollback-to REV`` writes ``<timestamp>_ghostsync_rollback_to_<REV>.sql`` instead.

A team on the CLI only moves forward: after a rollback file, the folder replayed from scratch
(``supabase db reset``, a preview branch, a new project) ends at the rollback's revision
(``replayed``). So the next export writes ``<timestamp>_ghostsync_forward_to_<REV>.sql`` first,
``REV`` the newest revision the folder has a file of: one file that upgrades from wherever
ghostsync is up to ``REV`` (nothing where it is there or beyond). Pushed, it takes production
forward; replayed, the folder ends at the same revision; exported again, nothing new is written.

How the CLI runs a file (``ghostsync.testing.supabase_cli`` applies a folder that way): ``RESET ALL``, then all of
the file's statements and the insert of its history row as ONE implicit transaction
that is not a transaction block. So each file here is:

- **one guarded statement**: a ``DO`` block that reads ghostsync's row of
  ``public.alembic_version`` and applies the revision only when the database is at the
  revision before it (``IS NOT DISTINCT FROM``: no row for the first one). Already at this
  revision or beyond (a second push without the history row, ``db reset`` on a database
  Alembic installed online, a copy of the folder in another project): a NOTICE and
  nothing else, so a file of an older revision never puts back an older function text.
  Behind it (a file missing): the file fails, changing nothing.
- **the revision's own SQL**, exactly what ``ghostsync migrate upgrade PREV:REV --sql``
  prints for it, each statement run with ``EXECUTE`` in order: the lock steps are the
  kit's ``DO`` retry loops (the same lock budget, retries and backoff as online; nothing
  is ``SET LOCAL``, ``LOCK TABLE`` or ``SAVEPOINT``, which warn or fail in the CLI's
  batch), and a failure anywhere rolls back the whole file and its history row.
- **Alembic's bookkeeping, idempotent**: ``public.alembic_version`` (or the table a host's
  ``env.py`` names with ``version_table_schema`` / ``version_table``, as its offline SQL shows)
  is created (as Alembic creates it) only when missing, by the first revision's file, and ghostsync's row is
  inserted (first revision) or moved from the previous revision; the host project's own
  rows are never touched. ``ghostsync status`` and a later switch to ``ghostsync migrate``
  read the same row.
- **the data jobs bounded**: the backfill (and the resync) run their batches inside the
  CLI's one transaction, holding a KEY SHARE (FOR SHARE) lock on every account they
  repaired until the file commits; a hard delete of one of those accounts waits that
  long. The file stops after repairing ``backfill_limit`` rows (its audit row then ends
  ``interrupted``, with a NOTICE): ``ghostsync backfill`` (short transactions) resumes
  where it stopped. A job that finishes says in a NOTICE how many rows it repaired.
  docs/SUPABASE-CLI.md has the figures behind the default.

Timestamps: a file's timestamp is the moment it is first exported (UTC, the CLI's 14
digits), and never earlier than one second after the newest migration already in
``DIR``, so ghostsync's files sort after the team's and ``db push`` takes them without
``--include-all``. Exporting again into the same folder keeps every ghostsync file that
is there (same name, same bytes) and adds only the revisions that are new.
"""

from __future__ import annotations

import argparse
import io
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from ghostsync import __version__, chain, names
from ghostsync.errors import GhostsyncError
from ghostsync.supabase_parser import split_and_trim

# Past this many repaired rows a data job stops inside a CLI migration (see the module doc).
DEFAULT_BACKFILL_LIMIT = 100_000
VERSION_DIGITS = 14
TIMESTAMP = "%Y%m%d%H%M%S"
OURS = re.compile(r"^([0-9]+)_ghostsync_(.+)\.sql$")
ROLLBACK_STEM = "rollback_to_"
FORWARD_STEM = "forward_to_"
ANY_MIGRATION = re.compile(r"^([0-9]+)_(.*)\.sql$")
VERIFY_NAME = "verify-trigger.sql"
PGTAP_PATH = Path("tests") / "database" / "ghostsync.test.sql"
# Alembic's own statements about its version table (by whatever name the env.py gives it), left out of
# the revision's SQL; group "table" is the table's name as Alembic writes it.
BOOKKEEPING = re.compile(r"^(?:CREATE TABLE (?P<table>\S+) \(\s*version_num VARCHAR\b|INSERT INTO (?P<i>\S+) "
                         r"\(version_num\)|UPDATE (?P<u>\S+) SET version_num=|DELETE FROM (?P<d>\S+) WHERE "
                         r"(?P=d)\.version_num\b|BEGIN$|COMMIT$)")
DROP_TABLE = re.compile(r"^DROP TABLE (\S+)$")


def _version_table_ddl(table: str) -> str:
    """The version table as Alembic creates it (its key named after the table, as Alembic names it)."""
    return (f"CREATE TABLE {table} (\n"
            "      version_num VARCHAR(32) NOT NULL,\n"
            f"      CONSTRAINT {table.rsplit('.', 1)[-1].strip(chr(34))}_pkc PRIMARY KEY (version_num)\n"
            "    )")


# -- the revision's SQL ------------------------------------------------------------------------------

def _offline(ini: Path, x: Mapping[str, str], run: str, target: str) -> str:
    """What ``alembic upgrade|downgrade TARGET --sql`` prints."""
    buffer = io.StringIO()
    config = Config(str(ini), output_buffer=buffer)
    config.attributes["configure_logger"] = False
    config.cmd_opts = argparse.Namespace(x=[f"{k}={v}" for k, v in x.items()])
    if run == "upgrade":
        command.upgrade(config, target, sql=True)
    else:
        command.downgrade(config, target, sql=True)
    return buffer.getvalue()


def _strip_comments(statement: str) -> str:
    lines = statement.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines).strip()


def statements(sql: str) -> list[str]:
    """``sql`` cut as the Supabase CLI cuts it, without Alembic's transaction and version-table
    statements and without leading comments."""
    out = []
    tables: set[str] = set()
    for statement in split_and_trim(sql):
        body = _strip_comments(statement)
        bookkeeping = BOOKKEEPING.match(body)
        if bookkeeping:
            tables.update(t for t in bookkeeping.groups() if t)
            continue
        dropped = DROP_TABLE.match(body)
        if body and not (dropped and dropped.group(1) in tables):  # the version table's own drop, at base
            out.append(body)
    return out


def version_table_of(ini: Path, x: Mapping[str, str] | None = None) -> str:
    """The version table the configuration's env.py writes to, as its offline SQL names it
    (schema-qualified; ``public`` where the env.py leaves the schema to the search path)."""
    sql = _offline(ini, dict(x or {}), "upgrade", chain.BASE_REVISION)
    for statement in split_and_trim(sql):
        found = BOOKKEEPING.match(_strip_comments(statement))
        if found and found.group("table"):
            table = found.group("table")
            return table if "." in table else f"public.{table}"
    return names.VERSION_TABLE


def upgrade_statements(rev: Script, ini: Path, x: Mapping[str, str] | None = None) -> list[str]:
    """The statements ``ghostsync migrate upgrade PREV:REV --sql`` runs for ``rev`` (bookkeeping left out)."""
    down = _down(rev)
    target = rev.revision if down is None else f"{down}:{rev.revision}"
    return statements(_offline(ini, dict(x or {}), "upgrade", target))


def downgrade_statements(rev: Script, ini: Path, x: Mapping[str, str] | None = None) -> list[str]:
    return statements(_offline(ini, dict(x or {}), "downgrade", f"{rev.revision}:{_down(rev) or 'base'}"))


# The kit's offline job loop (the backfill's and the resync's OFFLINE_TEMPLATE), and how it is bounded.
_JOB = re.compile(r"INSERT INTO public\.cleanup_audit_log \(job_name, status, records_affected, started_at, details\)"
                  r"\s+VALUES \('([a-z0-9_]+)', 'running'")
_LOOP_END = ("    n_batches := n_batches + 1;\n"
             "  END LOOP;\n")
_FINISH = ("  UPDATE public.cleanup_audit_log\n"
           "  SET status = 'succeeded', records_affected = total, finished_at = clock_timestamp(),\n"
           "      details = details || jsonb_build_object('batches', n_batches, 'last_id', after_id)\n"
           "  WHERE id = run_id;\n")
# What makes a statement a data job, whatever its whitespace: a loop that writes an audit row.
_LOOKS_LIKE_A_JOB = re.compile(r"(?is)\bINSERT\s+INTO\s+public\.cleanup_audit_log\b.*\bLOOP\b")
ADVICE = {
    "backfill_ghost_users": "run `ghostsync backfill` (batches of short transactions; it resumes where this "
                            "stopped), then check with verify-trigger.sql",
    "resync_profiles": "run `ghostsync repair` (short transactions), then check with verify-trigger.sql",
}
# What a finished job's NOTICE says it did ({n}: its audit row's records_affected).
DONE = {
    "backfill_ghost_users": "repaired {n} ghost user(s)",
    "resync_profiles": "rewrote {n} stale profile(s)",
}


class UnboundedJob(GhostsyncError):
    """A statement runs a data job (it loops and writes an audit row) that ``bound_job`` cannot bound."""


def bound_job(statement: str, limit: int) -> tuple[str, str | None]:
    """The kit's offline job loop stopped after ``limit`` rows; (statement, job name or None).

    A statement that is no job (no loop writing a ``cleanup_audit_log`` row) comes back as it
    is, with None. A job comes back bounded, or ``UnboundedJob`` is raised: never a job that
    would walk every account in the CLI's one transaction. Either way a bounded file reports
    the run in a NOTICE (the CLI prints them): how many rows it repaired, or where it stopped
    and what finishes the work."""
    if not _LOOKS_LIKE_A_JOB.search(statement):
        return statement, None
    match = _JOB.search(statement)
    if match is None or statement.count(_LOOP_END) != 1 or statement.count(_FINISH) != 1:
        # a job whose text differs from the kit's loop would otherwise run unbounded in the CLI's one transaction
        raise UnboundedJob(
            "a data job's statement does not have the shape of the kit's offline job loop (its audit row's "
            "INSERT, one `n_batches := n_batches + 1; END LOOP;`, one closing UPDATE of its audit row), so "
            f"export-supabase cannot bound it to {limit} row(s): nothing written")
    job = match.group(1)
    advice = ADVICE.get(job, "run `ghostsync repair`")
    done = DONE.get(job, "affected {n} row(s)")
    stopped = (f"stopped in a Supabase CLI migration after {{n}} row(s), at its limit of {limit} for one "
               f"transaction: {advice}")
    finish = (
        "  UPDATE public.cleanup_audit_log\n"
        "  SET status = CASE WHEN last_id IS NULL THEN 'succeeded' ELSE 'interrupted' END,\n"
        "      records_affected = total, finished_at = clock_timestamp(),\n"
        "      details = details || jsonb_build_object('batches', n_batches, 'last_id', after_id)\n"
        "        || CASE WHEN last_id IS NULL THEN '{}'::jsonb\n"
        f"                ELSE jsonb_build_object('error', replace({_literal(stopped)}, '{{n}}', total::text)) END\n"
        "  WHERE id = run_id;\n"
        "  IF last_id IS NOT NULL THEN\n"
        f"    RAISE NOTICE 'ghostsync: {job} %', replace({_literal(stopped)}, '{{n}}', total::text);\n"
        "  ELSE\n"
        f"    RAISE NOTICE 'ghostsync: {job} % (audit row %)', replace({_literal(done)}, '{{n}}', total::text), "
        "run_id;\n"
        "  END IF;\n"
    )
    bounded = statement.replace(_LOOP_END, (
        "    n_batches := n_batches + 1;\n"
        "    -- the CLI's one transaction: bounded (unless nothing is left to walk)\n"
        f"    EXIT WHEN total >= {limit} AND EXISTS (SELECT 1 FROM auth.users AS more WHERE more.id > after_id);\n"
        "  END LOOP;\n"))
    return bounded.replace(_FINISH, finish), job


# -- the file ------------------------------------------------------------------------------------------

def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(_literal(v) for v in values) + "]::text[]" if values else "ARRAY[]::text[]"


def _execute(sql: str, number: int, indent: str) -> str:
    tag = f"$ghostsync_sql_{number}$"
    if tag in sql:
        raise GhostsyncError(f"cannot quote a statement that contains {tag}")
    return f"{indent}EXECUTE {tag}\n{sql}\n{tag};"


READ_RECORDED = """  IF pg_catalog.to_regclass('{table}') IS NOT NULL THEN
    SELECT pg_catalog.array_agg(v.version_num::text ORDER BY v.version_num) INTO recorded
    FROM {table} AS v
    WHERE v.version_num = ANY ({members}) OR v.version_num LIKE 'ghostsync\\_%';
  END IF;
  IF pg_catalog.cardinality(recorded) > 1 THEN
    RAISE EXCEPTION 'ghostsync: {table} holds % rows of ghostsync''s branch (%): merge the heads '
      'with ghostsync migrate, then export again', pg_catalog.cardinality(recorded),
      pg_catalog.array_to_string(recorded, ', ');
  END IF;
  at := recorded[1];"""


def _members(script: ScriptDirectory) -> list[str]:
    return sorted(chain.branch_revisions(script))


def _ancestors(script: ScriptDirectory, rev: Script) -> list[str]:
    return [r.revision for r in chain.path_to(script, rev.revision) if r.revision != rev.revision]


def _down(rev: Script) -> str | None:
    down = rev.down_revision
    if isinstance(down, (tuple, list)):
        raise GhostsyncError(f"revision {rev.revision} merges {', '.join(down)}: export-supabase writes a linear "
                             "chain only")
    return down


def _upgrade_steps(rev: Script, ini: Path, x: Mapping[str, str] | None, backfill_limit: int,
                   first: int = 1, version_table: str = names.VERSION_TABLE) -> tuple[list[str], list[str], int]:
    """The ``EXECUTE`` steps of ``rev``'s upgrade and its bookkeeping in ``version_table`` (indented for the
    guard they sit in), the data jobs among them, and how many statements it runs (numbered from ``first``)."""
    down = _down(rev)
    body = upgrade_statements(rev, ini, x)
    jobs = []
    for n, sql in enumerate(body):
        try:
            body[n], job = bound_job(sql, backfill_limit)
        except UnboundedJob as exc:
            raise UnboundedJob(f"revision {rev.revision}: {exc}") from None
        if job:
            jobs.append(job)
    steps = [_execute(sql, n, "    ") for n, sql in enumerate(body, start=first)]
    if down is None:
        steps.insert(0, f"    IF pg_catalog.to_regclass('{version_table}') IS NULL THEN\n"
                        f"      {_version_table_ddl(version_table).replace(chr(10), chr(10) + '  ')};\n"
                        "    END IF;")
        steps.append(f"    INSERT INTO {version_table} (version_num) VALUES ({_literal(rev.revision)});")
    else:
        steps.append(f"    UPDATE {version_table} SET version_num = {_literal(rev.revision)}\n"
                     f"    WHERE version_num = {_literal(down)};")
    return steps, jobs, len(body)


def _jobs_line(jobs: list[str], backfill_limit: int) -> list[str]:
    return [f"-- Data job(s) {', '.join(jobs)}: at most {backfill_limit} row(s) in this transaction; "
            "past that, `ghostsync backfill` / `ghostsync repair` finish the work."] if jobs else []


def render_upgrade(rev: Script, script: ScriptDirectory, ini: Path, *, x: Mapping[str, str] | None = None,
                   backfill_limit: int = DEFAULT_BACKFILL_LIMIT, version_table: str = names.VERSION_TABLE) -> str:
    """The migration file of revision ``rev`` (see the module doc)."""
    down = _down(rev)
    steps, jobs, _ = _upgrade_steps(rev, ini, x, backfill_limit, version_table=version_table)
    older = [r for r in _ancestors(script, rev) if r != down]
    before = _literal(down) if down else "NULL"
    doc = (rev.doc or "").strip().splitlines()[0] if (rev.doc or "").strip() else ""
    header = [
        f"-- ghostsync {rev.revision}: {doc}",
        f"-- Written by `ghostsync export-supabase` (ghostsync {__version__}) for `supabase db push`; do not edit.",
        f"-- Applies the revision only where ghostsync is at {down or 'no revision (not installed)'}; where it is",
        f"-- at {rev.revision} or later this file changes nothing. One statement: the CLI runs it and its",
        "-- history row in one transaction, so a failure leaves nothing of it behind.",
        *_jobs_line(jobs, backfill_limit),
    ]
    behind = (["at IS NULL"] if down is not None else []) + ([f"at = ANY ({_array(older)})"] if older else [])
    refuse = [
        f"  ELSIF {' OR '.join(behind)} THEN",
        f"    RAISE EXCEPTION 'ghostsync: this database is at %, but this migration upgrades from {down or 'nothing'}"
        f" to {rev.revision}: apply ghostsync''s earlier migration files first', coalesce(at, 'no ghostsync "
        "revision');",
    ] if behind else []
    return "\n".join([
        *header,
        "DO $ghostsync_migration$",
        "DECLARE",
        "  recorded text[];",
        "  at text;",
        "BEGIN",
        READ_RECORDED.format(members=_array(_members(script)), table=version_table),
        f"  IF at IS NOT DISTINCT FROM {before} THEN",
        *steps,
        f"    RAISE NOTICE 'ghostsync: upgraded to {rev.revision}';",
        *refuse,
        "  ELSE",
        f"    RAISE NOTICE 'ghostsync: % is installed, so {rev.revision} is already applied: this migration "
        "changes nothing', at;",
        "  END IF;",
        "END",
        "$ghostsync_migration$;",
        "",
    ])


def render_rollback(target: str | None, script: ScriptDirectory, ini: Path, *,
                    x: Mapping[str, str] | None = None, version_table: str = names.VERSION_TABLE) -> str:
    """One migration taking ghostsync from whatever revision it is at back to ``target`` (None: out
    altogether). Each revision's downgrade runs only where the database is at that revision; no
    downgrade deletes a profile."""
    head = chain.head(script)
    path = chain.path_to(script, head)
    ids = [r.revision for r in path]
    if target is not None and target not in ids:
        raise GhostsyncError(f"--rollback-to {target}: not a revision of ghostsync's branch ({', '.join(ids)}, base)")
    keep = ids[: ids.index(target) + 1] if target else []
    undo = [r for r in reversed(path) if r.revision not in keep]
    if not undo:
        raise GhostsyncError(f"--rollback-to {target}: that is the head; there is nothing to roll back")
    blocks = []
    n = 0
    for rev in undo:
        down = _down(rev)
        lines = [f"  IF at = {_literal(rev.revision)} THEN"]
        for sql in downgrade_statements(rev, ini, x):
            n += 1
            lines.append(_execute(sql, n, "    "))
        if down is None:
            lines.append(f"    DELETE FROM {version_table} WHERE version_num = {_literal(rev.revision)};")
        else:
            lines.append(f"    UPDATE {version_table} SET version_num = {_literal(down)}\n"
                         f"    WHERE version_num = {_literal(rev.revision)};")
        lines.append(f"    at := {_literal(down) if down else 'NULL'};")
        lines.append("  END IF;")
        blocks.append("\n".join(lines))
    name = target or "base"
    return "\n".join([
        f"-- ghostsync: roll back to {name}" + (" (take ghostsync out: its triggers and functions)" if not target
                                                 else ""),
        f"-- Written by `ghostsync export-supabase --rollback-to {name}` (ghostsync {__version__}) for `supabase db "
        "push`; do not edit.",
        "-- Runs the downgrade of each revision above it that the database is at, newest first, in one",
        "-- transaction. No downgrade deletes a profile, an audit row or a recorded failure: the tables stay.",
        "DO $ghostsync_migration$",
        "DECLARE",
        "  recorded text[];",
        "  at text;",
        "BEGIN",
        READ_RECORDED.format(members=_array(_members(script)), table=version_table),
        f"  IF at IS NULL OR at = ANY ({_array(keep)}) THEN",
        f"    RAISE NOTICE 'ghostsync: already at {name} or before it (%): this migration changes nothing', "
        "coalesce(at, 'no ghostsync revision');",
        "    RETURN;",
        "  END IF;",
        f"  IF NOT at = ANY ({_array([r.revision for r in undo])}) THEN",
        "    RAISE EXCEPTION 'ghostsync: this database is at %, which this rollback does not know (it was written by "
        "an older ghostsync): export it again', at;",
        "  END IF;",
        *blocks,
        f"  RAISE NOTICE 'ghostsync: rolled back to {name}';",
        "END",
        "$ghostsync_migration$;",
        "",
    ])


def render_forward(target: str, script: ScriptDirectory, ini: Path, *, x: Mapping[str, str] | None = None,
                   backfill_limit: int = DEFAULT_BACKFILL_LIMIT, version_table: str = names.VERSION_TABLE) -> str:
    """One migration taking ghostsync from whatever revision it is at (none included) up to ``target``:
    what the folder's files reached before a rollback. Each revision's upgrade runs only where the
    database is at the revision before it, oldest first; at ``target`` or beyond it, nothing."""
    path = chain.path_to(script, target)
    blocks = []
    jobs: list[str] = []
    n = 0
    for rev in path:
        down = _down(rev)
        steps, rev_jobs, count = _upgrade_steps(rev, ini, x, backfill_limit, first=n + 1,
                                                version_table=version_table)
        n += count
        jobs.extend(rev_jobs)
        blocks.append("\n".join([
            f"  IF at = {_literal(down)} THEN" if down else "  IF at IS NULL THEN",
            *steps,
            f"    at := {_literal(rev.revision)};",
            "  END IF;",
        ]))
    below = [r.revision for r in path if r.revision != target]
    return "\n".join([
        f"-- ghostsync: forward to {target}",
        f"-- Written by `ghostsync export-supabase` (ghostsync {__version__}) after a rollback, for `supabase db "
        "push`; do not edit.",
        f"-- Runs the upgrade of each revision from where the database is up to {target}, oldest first, in",
        f"-- one transaction; where ghostsync is at {target} or later this file changes nothing. So",
        "-- production and every replay of the folder (db reset, a branch, a new project) end at the same revision.",
        *_jobs_line(jobs, backfill_limit),
        "DO $ghostsync_migration$",
        "DECLARE",
        "  recorded text[];",
        "  at text;",
        "  started text;",
        "BEGIN",
        READ_RECORDED.format(members=_array(_members(script)), table=version_table),
        f"  IF at IS NOT NULL AND NOT at = ANY ({_array(below)}) THEN",
        f"    RAISE NOTICE 'ghostsync: % is installed, so {target} is already reached: this migration changes "
        "nothing', at;",
        "    RETURN;",
        "  END IF;",
        "  started := coalesce(at, 'no ghostsync revision');",
        *blocks,
        f"  RAISE NOTICE 'ghostsync: upgraded from % to {target}', started;",
        "END",
        "$ghostsync_migration$;",
        "",
    ])


# -- the folder ------------------------------------------------------------------------------------------

def _newest_version(directory: Path) -> datetime | None:
    newest = None
    for path in directory.iterdir() if directory.is_dir() else []:
        match = ANY_MIGRATION.match(path.name)
        if match and len(match.group(1)) == VERSION_DIGITS:
            try:
                stamp = datetime.strptime(match.group(1), TIMESTAMP).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
            newest = stamp if newest is None or stamp > newest else newest
    return newest


def _stamps(directory: Path, count: int, now: datetime | None) -> list[str]:
    """``count`` 14-digit UTC timestamps, one second apart, from now or one second after the newest
    migration in ``directory``, whichever is later."""
    start = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    newest = _newest_version(directory)
    if newest is not None and newest >= start:
        start = newest + timedelta(seconds=1)
    return [(start + timedelta(seconds=k)).strftime(TIMESTAMP) for k in range(count)]


def _ghostsync_files(directory: Path) -> list[tuple[Path, str]]:
    """ghostsync's migration files in ``directory`` in the order the CLI applies them (byte-wise
    names), each with its stem after ``ghostsync_``."""
    entries = sorted(directory.iterdir(), key=lambda p: p.name.encode()) if directory.is_dir() else []
    return [(path, match.group(2)) for path in entries if (match := OURS.match(path.name))]


def exported(directory: Path) -> dict[str, Path]:
    """ghostsync's per-revision migration files already in ``directory``, by revision file stem."""
    return {stem: path for path, stem in _ghostsync_files(directory)
            if not stem.startswith((ROLLBACK_STEM, FORWARD_STEM))}


def replayed(directory: Path, script: ScriptDirectory) -> str | None:
    """The revision ghostsync ends at when ``directory`` is applied from scratch (``supabase db reset``,
    a preview branch, a new project): its files in order, each doing what its guard lets it do."""
    path = chain.path_to(script, chain.head(script))
    ids = [r.revision for r in path]
    by_stem = {Path(r.path).stem: r for r in path}

    def position(revision: str | None) -> int:
        return -1 if revision is None else ids.index(revision)

    at: str | None = None
    for file, stem in _ghostsync_files(directory):
        for kind in (ROLLBACK_STEM, FORWARD_STEM):
            if not stem.startswith(kind):
                continue
            named = stem[len(kind):]
            target = None if kind == ROLLBACK_STEM and named in ("base", "ghostsync_base") else named
            if target is not None and target not in ids:
                raise GhostsyncError(f"{file.name} names {target}, which this configuration does not know as a "
                                     "revision of ghostsync's branch: export with the --alembic-config that wrote it")
            rolls_back = kind == ROLLBACK_STEM and position(at) > position(target)
            goes_forward = kind == FORWARD_STEM and position(at) < position(target)
            if rolls_back or goes_forward:
                at = target
            break
        else:
            rev = by_stem.get(stem)
            if rev is not None and at == _down(rev):
                at = rev.revision
    return at


def export_supabase(directory: Path, config: str | Path | None = None, rollback_to: str | None = None, *,
                    now: datetime | None = None, backfill_limit: int = DEFAULT_BACKFILL_LIMIT,
                    x: Mapping[str, str] | None = None) -> list[Path]:
    """Write ghostsync's migrations into ``directory`` (the team's supabase/migrations) and the
    verification script and pgTAP file next to it; return the paths written, in order.

    Files already there are kept as they are (not returned); only revisions without a file
    are written. With ``rollback_to`` (a revision id, or ``base`` to take ghostsync out) only
    the rollback migration is written. ``x``: the settings ``-x`` would give (lock_timeout,
    lock_retries, lock_backoff, statement_timeout, batch_size); the environment's
    ``GHOSTSYNC_*`` values apply otherwise.
    """
    from ghostsync import pgtap, verify

    directory = Path(directory)
    ini = chain.config_path(config)
    script = chain.script_directory(ini)
    settings = dict(x or {})
    if backfill_limit < 1:
        raise GhostsyncError("the backfill limit must be at least 1")
    table = version_table_of(ini, settings)
    directory.mkdir(parents=True, exist_ok=True)
    if rollback_to is not None:
        back_to = None if rollback_to in ("base", "ghostsync@base") else rollback_to
        text = render_rollback(back_to, script, ini, x=settings, version_table=table)
        [stamp] = _stamps(directory, 1, now)
        path = directory / f"{stamp}_ghostsync_{ROLLBACK_STEM}{rollback_to.replace('@', '_')}.sql"
        path.write_text(text)
        return [path]
    path_to_head = chain.path_to(script, chain.head(script))
    have = exported(directory)
    stems = [Path(rev.path).stem for rev in path_to_head]
    missing = [n for n, stem in enumerate(stems) if stem not in have]
    if missing and any(stem in have for stem in stems[missing[0]:]):
        raise GhostsyncError(
            f"{directory} holds ghostsync's migrations after {path_to_head[missing[0]].revision} but not its file: "
            "restore it (from version control) rather than export it again with a newer timestamp")
    # After a rollback the folder's replay ends below what its files reached: one forward file first,
    # so production and every replay of the folder end where the files say.
    reached = next((rev.revision for rev, stem in zip(reversed(path_to_head), reversed(stems), strict=True)
                    if stem in have), None)
    at = replayed(directory, script)
    ids = [rev.revision for rev in path_to_head]
    forward_to = reached if reached is not None and (at is None or ids.index(at) < ids.index(reached)) else None
    stamps = _stamps(directory, len(missing) + (forward_to is not None), now)
    written: list[Path] = []
    if forward_to is not None:
        target = directory / f"{stamps.pop(0)}_ghostsync_{FORWARD_STEM}{forward_to}.sql"
        target.write_text(render_forward(forward_to, script, ini, x=settings, backfill_limit=backfill_limit,
                                         version_table=table))
        written.append(target)
    for stamp, n in zip(stamps, missing, strict=True):
        rev = path_to_head[n]
        target = directory / f"{stamp}_ghostsync_{stems[n]}.sql"
        target.write_text(render_upgrade(rev, script, ini, x=settings, backfill_limit=backfill_limit,
                                         version_table=table))
        written.append(target)
    verify_path = directory.parent / VERIFY_NAME
    verify_path.write_text(verify.script(config=ini, version_table=table))
    written.append(verify_path)
    test_path = directory.parent / PGTAP_PATH
    test_path.parent.mkdir(parents=True, exist_ok=True)
    test_path.write_text(pgtap.script(config=ini, version_table=table))
    written.append(test_path)
    return written


__all__ = [
    "DEFAULT_BACKFILL_LIMIT",
    "bound_job",
    "downgrade_statements",
    "export_supabase",
    "exported",
    "render_forward",
    "render_rollback",
    "render_upgrade",
    "replayed",
    "statements",
    "upgrade_statements",
    "version_table_of",
]
