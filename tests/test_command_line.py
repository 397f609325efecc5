"""The command line as people expect it: --version, options anywhere, one duration syntax, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ghostsync import __version__
from tests.paths import CHECKOUT_INI, REPO
from tests.seeding import audit_rows, ghost_count, ghostsync_cli, seed_bulk_ghosts


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


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ghostsync {__version__}"


def test_help_is_plain_text_with_exit_codes_and_environment():
    proc = run("--help")
    assert proc.returncode == 0
    for needed in ("exit codes:", "GHOSTSYNC_LOCK_TIMEOUT", "GHOSTSYNC_BATCH_SIZE", "GHOSTSYNC_DEAD_AFTER",
                   "GHOSTSYNC_ALEMBIC_CONFIG", "DATABASE_URL", "500ms, 1.5s, 15m, 2h or 1d"):
        assert needed in proc.stdout, needed
    for markup in ("``", ":class:", ".. ", "::\n"):
        assert markup not in proc.stdout, markup
    sub = run("status", "--help")
    assert sub.returncode == 0 and "exit codes:" in sub.stdout and "--quick" in sub.stdout


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
    assert proc.returncode == 0 and "ghostsync_0009" in proc.stdout, proc.stderr


@pytest.mark.parametrize("kind", ["refused", "unknown role", "bad port", "unknown database"])
def test_a_connection_failure_in_alembic_is_one_line(db, kind):
    port = db.server.port
    url = {
        "refused": "postgresql://postgres@127.0.0.1:1/postgres",
        "unknown role": f"postgresql://nobody_here@127.0.0.1:{port}/{db.name}",
        "bad port": "postgresql://postgres@127.0.0.1:99999/postgres",
        "unknown database": f"postgresql://postgres@127.0.0.1:{port}/no_such_db",
    }[kind]
    for proc in (alembic("upgrade", "head", env={"DATABASE_URL": url}),
                 run("migrate", "upgrade", "head", env={"DATABASE_URL": url})):
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, out
        failed = [line for line in out.splitlines() if line.startswith("FAILED:")]
        assert len(failed) == 1, out


def test_batch_size_from_the_environment_reaches_backfill_and_repair(db):
    db.upgrade()
    seed_bulk_ghosts(db, 1_000)
    proc = ghostsync_cli(db, "backfill", env_extra={"GHOSTSYNC_BATCH_SIZE": "250"})
    assert proc.returncode == 0, proc.stderr
    assert "in 4 batch(es)" in proc.stdout, proc.stdout
    seed_bulk_ghosts(db, 100, prefix="later")
    proc = ghostsync_cli(db, "repair", env_extra={"GHOSTSYNC_BATCH_SIZE": "30"})
    assert proc.returncode == 0, proc.stderr
    assert ghost_count(db) == 0
    details = audit_rows(db, "repair_stale_profiles")[-1][3]
    assert details["batch_size"] == 30
