"""One road for each thing (issue 20 §4): public Alembic API only, one URL resolver, the data jobs bounded or
refused, -x settings checked before the first statement, no doubled semicolons, errors read by SQLSTATE, a bug
said to be one."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import alembic
import pytest

import ghostsync
from tests.paths import REPO

PACKAGE = Path(ghostsync.__file__).parent
ALEMBIC = Path(alembic.__file__).parent


def _private_names_of_alembic() -> set[str]:
    """Every single-underscore name Alembic's source defines or reads as an attribute."""
    found: set[str] = set()
    for path in ALEMBIC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = None
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            if name and name.startswith("_") and not name.startswith("__"):
                found.add(name)
    return found


def alembic_private_uses(source: str) -> list[str]:
    """Where ``source`` reaches an Alembic name starting with ``_``: an attribute of another object than
    ``self``/``cls``, a name imported from alembic, or a ``getattr`` of such a name as a string."""
    private = _private_names_of_alembic()
    uses: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alembic"):
            uses += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                     if a.name.startswith("_") or (node.module or "").split(".")[-1].startswith("_")]
        elif isinstance(node, ast.Import):
            uses += [f"line {node.lineno}: import {a.name}" for a in node.names
                     if a.name.startswith("alembic") and any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                uses.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "getattr", "setattr", "hasattr") and len(node.args) > 1:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and name.value in private:
                uses.append(f"line {node.lineno}: {node.func.id}(..., {name.value!r})")
    return uses


def test_the_scan_finds_what_main_used():
    """The scan catches the private names ghostsync once used (so a clean result below means something)."""
    assert alembic_private_uses("def f(script, rev):\n    return script._version_locations, "
                                "rev._versioned_down_revisions\n")
    assert alembic_private_uses("from alembic.command import _migrations_fn\n")
    assert alembic_private_uses("x = getattr(context, '_migrations_fn')\n")
    assert not alembic_private_uses("def f(self):\n    return self._version_locations\n")


def test_no_ghostsync_module_uses_an_alembic_name_starting_with_an_underscore():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    found = {str(p.relative_to(PACKAGE.parent)): uses for p in modules
             if (uses := alembic_private_uses(p.read_text(encoding="utf-8")))}
    assert found == {}


def test_no_alembic_ini_states_a_default_other_than_the_settings():
    import re

    from ghostsync.migrations import settings

    stated = re.compile(r"-x (\w+)=\S+.*\(default ([^)]+)\)")
    for ini in (REPO / "alembic.ini", PACKAGE / "migrations" / "alembic.ini"):
        for line in ini.read_text().splitlines():
            if (match := stated.search(line)) and match.group(1) in settings.SETTINGS:
                assert match.group(2) == settings.SETTINGS[match.group(1)].default, f"{ini}: {line}"


def _backfill_job_statement() -> str:
    from ghostsync import chain, export

    script = chain.script_directory()
    [job] = [s for s in export.upgrade_statements(script.get_revision("ghostsync_0003"), chain.DEFAULT_INI)
             if "cleanup_audit_log" in s and "LOOP" in s]
    return job


def test_bound_job_bounds_the_kits_job_and_passes_other_statements_through():
    from ghostsync import export

    bounded, job = export.bound_job(_backfill_job_statement(), 7)
    assert job == "backfill_ghost_users"
    assert "EXIT WHEN total >= 7 AND EXISTS" in bounded
    assert export.bound_job("CREATE TABLE t (id int)", 7) == ("CREATE TABLE t (id int)", None)


@pytest.mark.parametrize("change", [
    ("    n_batches := n_batches + 1;\n  END LOOP;", "    n_batches := n_batches + 1;\nEND LOOP;"),
    ("  SET status = 'succeeded', records_affected = total,", "  SET status = 'succeeded',  records_affected = total,"),
    ("INSERT INTO public.cleanup_audit_log (job_name,", "INSERT INTO public.cleanup_audit_log\n  (job_name,"),
])
def test_bound_job_raises_on_a_job_it_does_not_recognise(change):
    """A job whose text differs from the kit's (here by whitespace) would run unbounded in the CLI's one
    transaction: export refuses instead of writing it."""
    from ghostsync import export
    from ghostsync.errors import GhostsyncError

    statement = _backfill_job_statement()
    assert change[0] in statement
    with pytest.raises(GhostsyncError, match="cannot bound it to 7 row"):
        export.bound_job(statement.replace(change[0], change[1]), 7)


def ghostsync_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ghostsync", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=REPO)


@pytest.mark.parametrize("args", [("upgrade", "head"), ("downgrade", "head:base")])
def test_the_sql_output_has_no_doubled_semicolons(args):
    import re

    proc = ghostsync_run("migrate", *args, "--sql")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("version_num") >= 9
    doubled = [proc.stdout[max(0, m.start() - 40):m.end()] for m in re.finditer(r";\s*;", proc.stdout)]
    assert doubled == []


@pytest.mark.parametrize("setting", ["lock_timeout=5", "lock_retries=many", "batch_size=0", "dead_after=-1s"])
def test_a_bad_x_setting_with_sql_prints_nothing_on_stdout(setting):
    """Checked before the first statement: not a line of the script, then a failure inside a revision."""
    proc = ghostsync_run("migrate", "-x", setting, "upgrade", "head", "--sql")
    assert (proc.returncode, proc.stdout) == (2, ""), (proc.returncode, proc.stdout[:300])
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"ghostsync: bad {setting.split('=')[0]} (from -x ")
    plain = subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "-x", setting,
                            "upgrade", "head", "--sql"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert plain.returncode != 0 and "BEGIN" not in plain.stdout and "CREATE" not in plain.stdout, plain.stdout


def test_a_bug_says_it_is_one_and_debug_shows_its_traceback(monkeypatch, capsys):
    from ghostsync import cli

    def broken(args):
        raise KeyError("no_such_key")

    monkeypatch.setitem(cli.COMMANDS, "verify-sql", broken)
    assert cli.main(["verify-sql"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ghostsync: a bug in ghostsync: KeyError: 'no_such_key'") and "--debug" in line, line
    with pytest.raises(KeyError, match="no_such_key"):
        cli.main(["--debug", "verify-sql"])


def test_an_operator_error_is_not_called_a_bug(monkeypatch, capsys):
    from ghostsync import cli
    from ghostsync.errors import GhostsyncError

    def refused(args):
        raise GhostsyncError("nothing to do here")

    monkeypatch.setitem(cli.COMMANDS, "verify-sql", refused)
    assert cli.main(["verify-sql"]) == 2
    assert capsys.readouterr().err == "ghostsync: nothing to do here\n"


class _Diag:
    def __init__(self, primary: str) -> None:
        self.message_primary = primary


class _DriverError(Exception):
    """A driver's error as dberrors reads it: SQLSTATE in ``pgcode`` (None: the driver's own), the server's
    primary message in ``diag`` (here in German, as with lc_messages = 'de_DE')."""

    def __init__(self, pgcode: str | None, primary: str) -> None:
        super().__init__(primary)
        self.pgcode = pgcode
        self.diag = _Diag(primary)


@pytest.mark.parametrize(("pgcode", "primary", "statement", "expected"), [
    ("28P01", "Passwort-Authentifizierung für Benutzer »ann« fehlgeschlagen", None,
     "authentication failed for role ann at db.example:6543"),
    ("3D000", "Datenbank »nope« existiert nicht", None, "check the database name in the URL"),
    ("57P01", "Verbindung wird abgebrochen aufgrund von Anweisung des Administrators", "SELECT 1",
     "the server ended the session"),
    (None, "Verbindung verweigert", None, "cannot connect to db.example:6543: Verbindung verweigert"),
    (None, "Server hat die Verbindung unerwartet geschlossen", "SELECT 1",
     "the connection to db.example:6543 was lost mid-run"),
])
def test_database_errors_are_read_by_their_sqlstate_not_their_words(pgcode, primary, statement, expected):
    from sqlalchemy.exc import OperationalError

    from ghostsync.errors import describe

    exc = OperationalError(statement, None, _DriverError(pgcode, primary))
    line = describe(exc, "postgresql://ann@db.example:6543/postgres")
    assert expected in line, line
    assert "\n" not in line


def test_the_standby_refusal_has_one_home():
    homes = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if "testing" not in p.parts and "read-only hot standby" in p.read_text()]
    assert homes == ["database.py"]


def test_a_failing_status_resolves_its_url_once(monkeypatch, capsys):
    from ghostsync import cli, urls

    calls = []
    normalize = urls.normalize

    def counted(url: str) -> str:
        calls.append(url)
        return normalize(url)

    monkeypatch.setattr(urls, "normalize", counted)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["status", "--database-url", "postgresql://nobody@127.0.0.1:1/none"]) == 2
    assert "cannot connect to 127.0.0.1:1" in capsys.readouterr().err
    assert len(calls) == 1, calls


def test_every_road_takes_the_url_in_the_same_order(monkeypatch):
    from ghostsync import urls

    env = {"DATABASE_URL": "postgresql://env@h/db"}
    assert urls.resolve("postgres://given@h/db", x_argument="postgresql://x@h/db", ini_value="postgresql://ini@h/db",
                        environ=env).startswith("postgresql+psycopg2://x@")
    assert urls.resolve("postgres://given@h/db", ini_value="postgresql://ini@h/db", environ=env).startswith(
        "postgresql+psycopg2://given@")
    assert urls.resolve(None, ini_value="postgresql://ini@h/db", environ=env).startswith("postgresql+psycopg2://env@")
    assert urls.resolve(None, ini_value="postgresql://ini@h/db", environ={}).startswith("postgresql+psycopg2://ini@")
    with pytest.raises(urls.BadDatabaseURL, match="no database URL: pass --database-url or set DATABASE_URL"):
        urls.resolve(None, ini_value="", environ={})


def test_migrate_hands_alembic_a_connection_and_each_revision_still_commits_on_its_own(db):
    """`ghostsync migrate` opens the connection itself (not inside a transaction): transaction_per_migration
    still commits each revision on its own. Deterministic: another session reads public.users in an open
    transaction, so 0005's ALTER TABLE gives up (no retries); 0002 to 0004 before it stay applied (one
    transaction for the whole upgrade would have lost them)."""
    import psycopg2

    from tests.seeding import ghostsync_cli

    assert ghostsync_cli(db, "migrate", "upgrade", "ghostsync_0001").returncode == 0
    holder = psycopg2.connect(db.url("supabase_admin"))
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.users")  # ACCESS SHARE, held until the rollback below
        proc = ghostsync_cli(db, "migrate", "-x", "lock_timeout=200ms", "-x", "lock_retries=0",
                             "upgrade", "head", timeout=120)
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "gave up on add or adopt public.users.deleted_at" in proc.stderr, proc.stderr
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0004", proc.stderr
    assert db.value("SELECT to_regclass('ghostsync.sync_failures') IS NOT NULL") is True
    assert ghostsync_cli(db, "migrate", "upgrade", "head").returncode == 0
    assert ghostsync_cli(db, "status").returncode == 0
