"""The command line as people expect it: --version, options anywhere, one duration syntax, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ghostsync import __version__
from tests.paths import CHECKOUT_INI, REPO
from tests.seeding import audit_rows, ghost_count, ghostsync_cli, head_revision, seed_bulk_ghosts


def run(*args: str, env: dict[str, str] | None = None, module: str = "ghostsync") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def alembic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run("-c", str(CHECKOUT_INI), *args, env=env, module="alembic")


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def failure_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """Standard error without Alembic's INFO progress log (which says what ran before the failure)."""
    return [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("INFO ")]


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ghostsync {__version__}"


def test_help_is_plain_text_with_exit_codes_and_environment():
    proc = run("--help")
    assert proc.returncode == 0
    for needed in ("exit codes:", "ghostsync not installed", "GHOSTSYNC_LOCK_TIMEOUT", "GHOSTSYNC_BATCH_SIZE",
                   "GHOSTSYNC_DEAD_AFTER", "GHOSTSYNC_ALEMBIC_CONFIG", "DATABASE_URL", "500ms, 1.5s, 15m, 2h or 1d"):
        assert needed in proc.stdout, needed
    for markup in ("``", ":class:", ".. ", "::\n"):
        assert markup not in proc.stdout, markup
    sub = run("status", "--help")
    assert sub.returncode == 0 and "exit codes:" in sub.stdout and "--quick" in sub.stdout
    assert "pip install 'ghostsync[prometheus]'" in " ".join(sub.stdout.split()), "--prometheus names its extra"


@pytest.mark.parametrize(("env", "words"), [
    ({"GHOSTSYNC_DEAD_AFTER": "abc"}, "bad dead_after (from GHOSTSYNC_DEAD_AFTER) 'abc'"),
    ({"GHOSTSYNC_LOCK_TIMEOUT": "2"}, "use a number and a unit: 500ms, 1.5s, 15m, 2h or 1d"),
    ({"GHOSTSYNC_LOCK_TIMEOUT": "0s"}, "must be more than 0"),
    ({"GHOSTSYNC_BATCH_SIZE": "lots"}, "use a whole number of at least 1"),
])
def test_a_bad_environment_value_is_one_line_even_for_help(env, words):
    proc = run("--help", env=env)
    assert proc.returncode == 2
    assert words in one_line(proc)


@pytest.mark.parametrize(("args", "words"), [
    (("-x", "lock_timeout=0", "upgrade", "head", "--sql"), "bad lock_timeout (from -x lock_timeout) '0'"),
    (("-x", "lock_timeout=5", "upgrade", "head", "--sql"), "use a number and a unit"),
    (("-x", "batch_size=0", "upgrade", "head", "--sql"), "use a whole number of at least 1"),
])
def test_a_bad_x_option_is_one_line(args, words):
    for proc in (run("migrate", *args), alembic(*args)):
        assert proc.returncode != 0
        assert words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_bare_number_is_refused_for_a_duration_option():
    proc = run("backfill", "--dead-after", "60", "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert proc.returncode == 2
    assert "use a number and a unit: 500ms, 1.5s, 15m, 2h or 1d" in one_line(proc)


@pytest.mark.parametrize("url", [
    "postgresql://postgres:se@cret@db.example.invalid/postgres",
    "postgres://postgres:se@cret@db.example.invalid:5432/postgres",
])
def test_an_unencoded_at_in_the_password_never_leaks(url):
    for proc in (run("status", env={"DATABASE_URL": url}), alembic("upgrade", "head", env={"DATABASE_URL": url})):
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "cret" not in out and "se@" not in out, out
        assert "write an '@' in the user name or password as %40" in out
        assert "Traceback" not in out


def test_migrate_passes_everything_to_alembic():
    ours = run("migrate", "history")
    theirs = alembic("history")
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout
    sql = run("migrate", "-x", "lock_timeout=1s", "upgrade", "head", "--sql")
    assert sql.returncode == 0
    assert "greatest(10, 1000 / 1)" in sql.stdout and "'1000ms'" in sql.stdout


def test_global_options_go_before_or_after_the_command(db):
    db.upgrade()
    url = db.url()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for args in (("--database-url", url, "status"), ("status", "--database-url", url)):
        proc = subprocess.run([sys.executable, "-m", "ghostsync", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ghostsync", "--database-url", url, "migrate", "current"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and head_revision() in proc.stdout, proc.stderr


@pytest.mark.parametrize("kind", ["refused", "unknown role", "bad port", "unknown database"])
def test_a_connection_failure_in_alembic_is_one_line(db, kind):
    port = db.server.port
    url = {
        "refused": "postgresql://postgres@127.0.0.1:1/postgres",
        "unknown role": f"postgresql://nobody_here@127.0.0.1:{port}/{db.name}",
        "bad port": "postgresql://postgres@127.0.0.1:99999/postgres",
        "unknown database": f"postgresql://postgres@127.0.0.1:{port}/no_such_db",
    }[kind]
    theirs = alembic("upgrade", "head", env={"DATABASE_URL": url})
    assert theirs.returncode != 0 and "Traceback" not in theirs.stdout + theirs.stderr
    assert len([line for line in theirs.stdout.splitlines() if line.startswith("FAILED:")]) == 1, theirs.stdout
    ours = run("migrate", "upgrade", "head", env={"DATABASE_URL": url})
    assert ours.returncode == 2, (ours.returncode, ours.stderr)
    assert one_line(ours).startswith("ghostsync: ") and ours.stdout == ""


@pytest.mark.parametrize("args", [("upgrade", "nosuchrev", "--sql"),
                                  ("downgrade", "ghostsync_0003:nosuchrev", "--sql")])
def test_a_migrate_failure_is_one_line_and_exit_2(args):
    """Alembic's own handler logs the message (ERROR [alembic.util.messaging]), prints it again as FAILED:
    and exits 255; `ghostsync migrate` says it once, with the documented code."""
    proc = run("migrate", *args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = failure_lines(proc)
    assert line.startswith("ghostsync: ") and "nosuchrev" in line and "ghostsync: ghostsync:" not in line
    assert "FAILED" not in proc.stdout + proc.stderr and "ERROR" not in proc.stderr
    traced = run("migrate", "--raiseerr", *args)
    assert traced.returncode != 0 and "Traceback" in traced.stderr, "Alembic's --raiseerr still shows the traceback"


def test_a_migrate_failure_against_a_database_is_one_line_and_exit_2(db):
    proc = ghostsync_cli(db, "migrate", "downgrade", "ghostsync_0003")  # not installed: not a downgrade target
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    failures = failure_lines(proc)
    assert len(failures) == 1 and failures[0].startswith("ghostsync: ") and "ghostsync_0003" in failures[0], failures
    assert "FAILED" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_export_with_a_host_config_prints_only_paths(tmp_path):
    """A host's stock env.py configures logging from its ini: its INFO lines stay out of the export's output."""
    host = tmp_path / "host"
    host.mkdir()
    made = subprocess.run([sys.executable, "-m", "alembic", "init", "migrations"], cwd=host, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    ini = host / "alembic.ini"
    text = ini.read_text()
    text = text.replace("# version_locations = %(here)s/bar:%(here)s/bat:%(here)s/alembic/versions",
                        "version_locations = %(here)s/migrations/versions ghostsync:migrations/versions")
    text = text.replace("sqlalchemy.url = driver://user:pass@localhost/dbname",
                        "sqlalchemy.url = postgresql+psycopg2://nobody@127.0.0.1:1/never_contacted")
    ini.write_text(text.replace("path_separator = os", "path_separator = space"))
    env_py = host / "migrations" / "env.py"  # the README's one env.py change
    env_py.write_text(env_py.read_text().replace("context.configure(\n",
                                                 "context.configure(\n        transaction_per_migration=True,\n"))
    for config in (("--alembic-config", str(ini)), ()):
        out = tmp_path / ("host-export" if config else "export") / "migrations"
        proc = run(*config, "export-supabase", str(out))
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr
        printed = proc.stdout.splitlines()
        assert printed and all(os.path.exists(line) for line in printed), proc.stdout
        assert len([p for p in printed if "_ghostsync_0001_" in p]) == 1


def test_batch_size_from_the_environment_reaches_backfill_and_repair(db):
    db.upgrade()
    seed_bulk_ghosts(db, 1_000)
    proc = ghostsync_cli(db, "backfill", env_extra={"GHOSTSYNC_BATCH_SIZE": "250"})
    assert proc.returncode == 0, proc.stderr
    assert "in 4 batch(es)" in proc.stdout, proc.stdout
    seed_bulk_ghosts(db, 100, prefix="later")
    db.sql("SET session_replication_role = replica; UPDATE auth.users SET email = 'changed@example.com' "
           "WHERE id = (SELECT id FROM public.users LIMIT 1)")  # a stale profile: the step runs, and logs
    proc = ghostsync_cli(db, "repair", env_extra={"GHOSTSYNC_BATCH_SIZE": "30"})
    assert proc.returncode == 0, proc.stderr
    assert ghost_count(db) == 0
    details = audit_rows(db, "repair_stale_profiles")[-1][3]
    assert details["batch_size"] == 30


def test_sql_into_a_closed_pipe_ends_quietly_and_not_as_done():
    """``ghostsync migrate upgrade head --sql | head``: the reader closed the pipe; no BrokenPipeError line,
    and exit 1, since the script it printed is not whole."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "ghostsync", "migrate", "upgrade", "head", "--sql"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"})
    finally:
        os.close(write_end)
    assert proc.returncode == 1, proc.stderr
    assert "ghostsync:" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
