"""Advice that fits the road the team is on (issue 19, section 5).

``status`` and the verification script used to advise ``ghostsync migrate upgrade head``
everywhere. In a host project that command fails (several heads, revisions ghostsync does
not know), and a team that deploys with ``supabase db push`` runs no ``ghostsync migrate``.
Each case reads the advice where the team reads it, then runs exactly what it says and
checks that it did what it promised.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import psycopg2.extras

from ghostsync import chain
from ghostsync.export import export_supabase
from ghostsync.testing import supabase_cli
from ghostsync.testing.fixtures import SupabaseDatabase
from tests.seeding import ghostsync_cli, seed_ghosts

HEAD = chain.head(chain.script_directory())
T0 = datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc)

HOST_INI = """\
[alembic]
script_location = %(here)s/migrations
version_locations = %(here)s/migrations/versions ghostsync:migrations/versions
path_separator = space

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = WARNING
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""
HOST_REVISION = '''\
"""The host's own table, which needs ghostsync's profiles."""
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = ("host",)
depends_on = "ghostsync_0001"


def upgrade():
    op.execute("CREATE TABLE public.products (id int PRIMARY KEY, owner uuid REFERENCES public.users (id))")


def downgrade():
    op.execute("DROP TABLE public.products")
'''


def make_host(root: Path) -> Path:
    """A host project: its own revision beside ghostsync's branch (two heads), the packaged env.py's contract."""
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text("from ghostsync.migrations.environment import run\n\nrun()\n")
    (versions / "host_0001_products.py").write_text(HOST_REVISION)
    ini = root / "alembic.ini"
    ini.write_text(HOST_INI)
    return ini


def status_json(db: SupabaseDatabase, *args: str, env_extra: dict[str, str] | None = None) -> tuple[int, dict]:
    proc = ghostsync_cli(db, *args, "status", "--json", env_extra=env_extra)
    return proc.returncode, json.loads(proc.stdout)


def warning(found: dict, code: str) -> str:
    [message] = [w["message"] for w in found["warnings"] if w["code"] == code]
    return message


def run_advice(db: SupabaseDatabase, message: str, cwd: Path) -> None:
    """Run each command the advice names in backticks, as written, against ``db``."""
    for command in re.findall(r"`([^`]+)`", message):
        for part in command.split(" && "):
            argv = shlex.split(part)
            program = {"alembic": [sys.executable, "-m", "alembic"],
                       "ghostsync": [sys.executable, "-m", "ghostsync"]}[argv[0]]
            proc = subprocess.run([*program, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=300,
                                  env=dict(os.environ, DATABASE_URL=db.url()))
            assert proc.returncode == 0, f"{part}: {proc.stdout}{proc.stderr}"


def test_status_in_a_host_project_advises_the_hosts_alembic_command(db, tmp_path):
    ini = make_host(tmp_path / "host")
    # not installed: the host's command installs both branches
    proc = ghostsync_cli(db, "--alembic-config", str(ini), "status")
    assert proc.returncode == 2
    assert f"run `alembic -c {ini} upgrade heads`" in proc.stderr, proc.stderr
    seed_ghosts(db)
    db.upgrade("ghostsync_0006")
    # behind head: `ghostsync migrate upgrade head` fails in the host (two heads) ...
    proc = ghostsync_cli(db, "--alembic-config", str(ini), "migrate", "upgrade", "head")
    assert proc.returncode != 0 and "multiple head" in (proc.stdout + proc.stderr).lower(), proc.stderr
    # ... so status names the host's own command, whether the config comes as an option or from the environment
    rc, found = status_json(db, "--alembic-config", str(ini))
    advice = warning(found, "behind_head")
    assert rc == 0 and advice == (f"the database is at revision ghostsync_0006, head is {HEAD}: "
                                  f"`alembic -c {ini} upgrade heads` installs what is newer")
    rc, from_env = status_json(db, env_extra={"GHOSTSYNC_ALEMBIC_CONFIG": str(ini)})
    assert warning(from_env, "behind_head") == advice
    run_advice(db, advice, tmp_path)
    assert {r[0] for r in db.sql("SELECT version_num FROM public.alembic_version")} == {HEAD, "host_0001"}
    rc, found = status_json(db, "--alembic-config", str(ini))
    assert rc == 0 and found["at_head"] and found["warnings"] == []


def test_status_of_the_packaged_chain_keeps_ghostsync_migrate(db):
    proc = ghostsync_cli(db, "status")
    assert proc.returncode == 2 and "run `ghostsync migrate upgrade head`" in proc.stderr, proc.stderr
    db.upgrade("ghostsync_0006")
    rc, found = status_json(db)
    assert rc == 0
    assert warning(found, "behind_head").endswith(": `ghostsync migrate upgrade head` installs what is newer")


def verification_row(db: SupabaseDatabase, script: Path) -> dict:
    conn = psycopg2.connect(db.url("postgres"))
    try:
        conn.autocommit = True
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(script.read_text())
            [row] = cur.fetchall()
    finally:
        conn.close()
    return dict(row)


def test_the_verification_script_advises_the_supabase_cli_road(db, tmp_path):
    project = tmp_path / "project"
    migrations = project / "supabase" / "migrations"
    export_supabase(migrations, now=T0)
    script = project / "supabase" / "verify-trigger.sql"
    cli_road = "run `ghostsync export-supabase supabase/migrations`, then `supabase db push`"
    row = verification_row(db, script)
    assert row["error"]["code"] == "not_installed"
    assert row["error"]["message"] == f"public.users does not exist: ghostsync is not installed; {cli_road}"
    seed_ghosts(db)
    files = sorted(migrations.iterdir())
    first = tmp_path / "first" / "supabase" / "migrations"
    first.mkdir(parents=True)
    for path in files[:6]:
        (first / path.name).write_bytes(path.read_bytes())
    assert supabase_cli.push(db.url(), first).ok
    row = verification_row(db, script)
    assert row["healthy"] and warning(row, "behind_head") == (
        f"the database is at revision ghostsync_0006, head is {HEAD}: `ghostsync export-supabase "
        "supabase/migrations`, then `supabase db push`, installs what is newer")
    assert supabase_cli.push(db.url(), migrations).ok
    assert verification_row(db, script)["at_head"]
    # a function edited by hand: the advice is a rollback file and the forward file, pushed
    source = db.value("SELECT pg_get_functiondef('ghostsync.handle_new_user()'::regprocedure)")
    db.sql(source.replace("BEGIN\n", "BEGIN\n  -- edited by hand\n", 1), user="postgres")
    row = verification_row(db, script)
    [drift] = [p["message"] for p in row["problems"] if p["code"] == "function_drift"]
    advice = re.search(r"`ghostsync export-supabase supabase/migrations --rollback-to (\S+)`, then `ghostsync "
                       r"export-supabase supabase/migrations` and `supabase db push` reinstall it$", drift)
    assert advice, drift
    export_supabase(migrations, rollback_to=advice.group(1), now=T0 + timedelta(days=1))
    export_supabase(migrations, now=T0 + timedelta(days=2))
    pushed = supabase_cli.push(db.url(), migrations)
    assert pushed.ok and len(pushed.files) == 2, pushed.text
    row = verification_row(db, script)
    assert row["healthy"] and row["at_head"] and row["problems"] == [], row["problems"]
