"""Rollback in a host project keeps the host's data (issue 19, section 2).

The host is what ``alembic init`` writes today, set up as the README says:
``version_locations`` with its own folder and ``ghostsync:migrations/versions``,
``path_separator = space`` in place of the ``path_separator = os`` line
``alembic init`` writes, its stock env.py with ``transaction_per_migration=True``.
Its revision ``host_0001`` depends on ghostsync_0001 and creates a table with
rows. Everything runs as a deploy pipeline would: ``python -m alembic`` and
``python -m ghostsync`` in subprocesses.

- After the README's host rollback (``alembic downgrade
  ghostsync@ghostsync_0001``) alembic_version holds only ``host_0001``; status,
  repair and backfill, and the verification and pgTAP scripts, know ghostsync
  is at ghostsync_0001.
- ``ghostsync migrate downgrade ghostsync@base`` would take host_0001 (and its
  rows) down first: refused in one line that names it and says what to run
  instead, before anything is downgraded; what it says works. The check that
  the role may drop ghostsync's triggers on auth.users holds for a host's
  config too.
- ``--database-url`` reaches the host's stock env.py (as ``sqlalchemy.url``)
  and the README's (as ``DATABASE_URL``); an env.py that reads its URL from
  anywhere else is refused. A canary database named in the host's ini stays
  untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from ghostsync import chain, pgtap, plan
from ghostsync.testing.fixtures import SupabaseDatabase, supabase_database
from ghostsync.testing.pgtap import install_extension
from ghostsync.urls import normalize
from tests.paths import REPO
from tests.seeding import ghost_count, seed_ghosts, triggers_on_auth_users

GHOSTSYNC_HEAD = chain.head(chain.script_directory())

HOST_REVISION = '''\
"""orders: the host's own table, after ghostsync's public.users"""
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = ("app",)
depends_on = "ghostsync_0001"


def upgrade():
    op.execute("CREATE TABLE public.orders (id integer PRIMARY KEY, item text NOT NULL)")
    op.execute("INSERT INTO public.orders VALUES (1, 'tea'), (2, 'cake')")


def downgrade():
    op.execute("DROP TABLE public.orders")
'''

# The README's host env.py reads DATABASE_URL (an env.py of that kind, for the URL test).
README_STYLE_URL = 'url = os.environ["DATABASE_URL"]'
# An env.py that reads its URL from a variable of its own: ghostsync cannot reach it.
OWN_VARIABLE_URL = 'url = os.environ["HOST_APP_DB"]'


def make_host(root: Path, ini_url: str, *, reads: str | None = None) -> Path:
    """A host project made by ``alembic init``, set up as the README says; its ini names ``ini_url``.

    ``reads``: a line that replaces how the stock env.py finds its URL (None: the stock
    ``engine_from_config`` on the ini's ``sqlalchemy.url``)."""
    ini = root / "alembic.ini"
    command.init(Config(str(ini)), str(root / "migrations"))
    text = ini.read_text()
    assert "\npath_separator = os\n" in text, "what alembic init writes"
    text = text.replace("\npath_separator = os\n", "\npath_separator = space\nversion_locations = "
                        "%(here)s/migrations/versions ghostsync:migrations/versions\n")
    text = text.replace("sqlalchemy.url = driver://user:pass@localhost/dbname",
                        f"sqlalchemy.url = {ini_url.replace('%', '%%')}")
    ini.write_text(text)
    env = root / "migrations" / "env.py"
    source = env.read_text()
    assert source.count("target_metadata=target_metadata") == 2
    source = source.replace("target_metadata=target_metadata",
                            "target_metadata=target_metadata, transaction_per_migration=True")
    if reads is not None:
        engine = ('    connectable = engine_from_config(\n'
                  '        config.get_section(config.config_ini_section, {}),\n'
                  '        prefix="sqlalchemy.",\n'
                  '        poolclass=pool.NullPool,\n'
                  '    )\n')
        assert engine in source
        source = source.replace(engine, f"    import os\n    {reads}\n"
                                "    from sqlalchemy import create_engine\n"
                                "    connectable = create_engine(url, poolclass=pool.NullPool)\n")
    env.write_text(source)
    (root / "migrations" / "versions" / "host_0001_orders.py").write_text(HOST_REVISION)
    return ini


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GHOSTSYNC_ALEMBIC_CONFIG")}
    return subprocess.run([sys.executable, "-m", *args], env={**environment, **(env or {})}, capture_output=True,
                          text=True, timeout=300, cwd=cwd or REPO)


def host_alembic(ini: Path, *args: str) -> str:
    """The host's own ``alembic`` command line, as its deploy pipeline runs it."""
    proc = run("alembic", "-c", str(ini), *args, cwd=ini.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def ghostsync(ini: Path, *args: str, url: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    options = ("--database-url", url) if url else ()
    return run("ghostsync", *options, "--alembic-config", str(ini), *args, env=env, cwd=ini.parent)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return lines[0]


def versions(db: SupabaseDatabase) -> set[str]:
    if db.value("SELECT to_regclass('public.alembic_version')") is None:
        return set()
    return {row[0] for row in db.sql("SELECT version_num FROM public.alembic_version")}


def orders(db: SupabaseDatabase) -> list[tuple[Any, ...]]:
    return db.sql("SELECT id, item FROM public.orders ORDER BY id")


def untouched(canary: SupabaseDatabase) -> bool:
    return canary.value("SELECT to_regclass('public.alembic_version') IS NULL AND to_regclass('public.users') IS NULL "
                        "AND to_regnamespace('ghostsync') IS NULL AND to_regclass('public.orders') IS NULL") is True


@pytest.fixture
def host(db: SupabaseDatabase, tmp_path: Path) -> Path:
    """A host project whose ini names ``db``, at heads: ghostsync's chain and host_0001 with its rows."""
    seed_ghosts(db)
    ini = make_host(tmp_path / "host", normalize(db.url()))
    host_alembic(ini, "upgrade", "heads")
    assert versions(db) == {GHOSTSYNC_HEAD, "host_0001"}
    assert orders(db) == [(1, "tea"), (2, "cake")]
    return ini


def test_after_the_hosts_rollback_every_command_knows_where_ghostsync_stands(db, host):
    host_alembic(host, "downgrade", "ghostsync@ghostsync_0001")
    assert versions(db) == {"host_0001"}, "ghostsync_0001 is implied by host_0001's depends_on"
    assert triggers_on_auth_users(db) == {}
    with db.auth() as auth:
        auth.signup(email="meanwhile@example.com")
    assert ghost_count(db) == 1

    proc = ghostsync(host, "status", "--json", env={"DATABASE_URL": db.url()})
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    found = json.loads(proc.stdout)
    assert (found["revision"], found["head"], found["at_head"]) == ("ghostsync_0001", GHOSTSYNC_HEAD, False)
    assert found["ghosts"] == 1

    proc = ghostsync(host, "backfill", "--dry-run", env={"DATABASE_URL": db.url()})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "would repair 1 ghost user(s)" in proc.stdout
    proc = ghostsync(host, "repair", env={"DATABASE_URL": db.url()})
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "pass the host project's --alembic-config" not in proc.stderr
    assert "ghost(s) backfilled" in proc.stdout
    assert orders(db) == [(1, "tea"), (2, "cake")]

    # the scripts that run without Python find the same revision
    proc = ghostsync(host, "verify-sql")
    assert proc.returncode == 0, proc.stderr
    [(up, revision, error)] = db.sql(f"SELECT up, revision, error FROM ({proc.stdout.rstrip().rstrip(';')}) AS v",
                                     user="postgres")
    assert (up, revision, error) == (True, "ghostsync_0001", None)
    tap = pgtap_output(db, pgtap.script(str(host)))
    assert "ok 1 - ghostsync is installed: ghostsync_0001" in tap, tap


def pgtap_output(db: SupabaseDatabase, script: str) -> str:
    sharedir = Path(db.value("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'"))
    line = install_extension(sharedir / "extension")
    assert "NOT AVAILABLE" not in line, line
    db.sql("CREATE EXTENSION IF NOT EXISTS pgtap WITH SCHEMA extensions")
    try:
        proc = db.psql(script, user="postgres")
    finally:
        db.sql("DROP EXTENSION IF EXISTS pgtap")
    return proc.stdout + proc.stderr


def test_ghostsync_base_is_refused_while_a_host_revision_depends_on_it(db, host):
    before = (versions(db), sorted(triggers_on_auth_users(db)))
    down = ghostsync(host, "migrate", "downgrade", "ghostsync@base", env={"DATABASE_URL": db.url()})
    line = one_line(down)
    assert line.startswith("ghostsync: refusing to downgrade") and "host_0001" in line, line
    advised = f"ghostsync --alembic-config {host} migrate downgrade ghostsync@ghostsync_0001"
    assert f"`{advised}`" in line and line.endswith("nothing was downgraded"), line
    assert (versions(db), sorted(triggers_on_auth_users(db))) == before, "nothing downgraded"
    assert orders(db) == [(1, "tea"), (2, "cake")]

    # what the line says to run instead works, and keeps the host's rows
    done = ghostsync(host, *advised.split()[3:], env={"DATABASE_URL": db.url()})
    assert done.returncode == 0, done.stdout + done.stderr
    assert versions(db) == {"host_0001"} and triggers_on_auth_users(db) == {}
    assert orders(db) == [(1, "tea"), (2, "cake")]

    # from there, ghostsync@base is still refused, without advice to drop anything
    line = one_line(ghostsync(host, "migrate", "downgrade", "ghostsync@base", env={"DATABASE_URL": db.url()}))
    assert "host_0001" in line and "already as far down as they allow (ghostsync_0001" in line, line
    assert versions(db) == {"host_0001"} and orders(db) == [(1, "tea"), (2, "cake")]
    # the SQL of that downgrade is not written either
    offline = ghostsync(host, "migrate", "downgrade", "host_0001:ghostsync@base", "--sql")
    assert "host_0001" in one_line(offline) and offline.stdout == ""

    # a downgrade of the host's own branch is the host's call
    up = ghostsync(host, "migrate", "upgrade", "heads", env={"DATABASE_URL": db.url()})
    assert up.returncode == 0, up.stdout + up.stderr
    down = ghostsync(host, "migrate", "downgrade", "app@base", env={"DATABASE_URL": db.url()})
    assert down.returncode == 0, down.stdout + down.stderr
    assert versions(db) == {GHOSTSYNC_HEAD}


def test_the_role_check_holds_for_a_host_config(pg, supabase_servers, tmp_path):
    """Today's roles without supautils may not drop ghostsync's triggers: refused before anything goes."""
    with supabase_database(supabase_servers.get(pg.major, "current")) as db:
        ini = make_host(tmp_path / "host", normalize(db.url()))
        host_alembic(ini, "upgrade", "heads")
        before = (versions(db), sorted(triggers_on_auth_users(db)))
        line = one_line(ghostsync(ini, "migrate", "downgrade", "ghostsync@ghostsync_0001"))
        assert "cannot drop ghostsync's triggers on auth.users: role postgres is not their owner" in line, line
        assert line.endswith("nothing was downgraded")
        assert (versions(db), sorted(triggers_on_auth_users(db))) == before, "nothing half-done"
        done = ghostsync(ini, "migrate", "downgrade", "ghostsync@ghostsync_0001", url=db.url("supabase_admin"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert versions(db) == {"host_0001"} and orders(db) == [(1, "tea"), (2, "cake")]


@pytest.fixture
def canary(pg, supabase_servers):
    """A database the host's ini names: nothing may ever reach it."""
    with supabase_database(supabase_servers.get(pg.major)) as canary:
        yield canary
        assert untouched(canary), "the canary database named in the host's ini was migrated"


@pytest.mark.parametrize("reads", [None, README_STYLE_URL], ids=["stock env.py", "README env.py"])
def test_database_url_reaches_the_hosts_env(db, canary, tmp_path, reads):
    ini = make_host(tmp_path / "host", normalize(canary.url()), reads=reads)
    url = db.url()
    up = ghostsync(ini, "migrate", "upgrade", "heads", url=url, env={"DATABASE_URL": canary.url()})
    assert up.returncode == 0, up.stdout + up.stderr
    assert versions(db) == {GHOSTSYNC_HEAD, "host_0001"} and orders(db) == [(1, "tea"), (2, "cake")]
    assert untouched(canary)
    down = ghostsync(ini, "migrate", "downgrade", "ghostsync@ghostsync_0001", url=url,
                     env={"DATABASE_URL": canary.url()})
    assert down.returncode == 0, down.stdout + down.stderr
    assert versions(db) == {"host_0001"}


def test_an_env_that_reads_its_url_elsewhere_is_refused(db, canary, tmp_path):
    ini = make_host(tmp_path / "host", normalize(canary.url()), reads=OWN_VARIABLE_URL)
    for args in (("upgrade", "heads"), ("downgrade", "ghostsync@base"), ("stamp", "heads")):
        line = one_line(ghostsync(ini, "migrate", *args, url=db.url(), env={"HOST_APP_DB": canary.url()}))
        assert f"--database-url names database {db.name}" in line and f"connects to database {canary.name}" in line
        assert line.endswith("nothing was done"), line
        assert untouched(canary) and versions(db) == set()


def test_a_percent_in_the_url_reaches_a_stock_env(db, canary, tmp_path):
    """``sqlalchemy.url`` goes through the ini's interpolation: a '%' (an encoded character) is written '%%'."""
    role = f"per%cent_{db.name}"
    db.sql(f"CREATE ROLE \"{role}\" LOGIN SUPERUSER PASSWORD 'p@ss%word'")
    ini = make_host(tmp_path / "host", normalize(canary.url()))
    url = db.url().replace("://postgres@", f"://{role.replace('%', '%25')}:p%40ss%25word@", 1)
    assert url != db.url()
    up = ghostsync(ini, "migrate", "upgrade", "ghostsync@ghostsync_0001", url=url)
    assert up.returncode == 0, up.stdout + up.stderr
    assert versions(db) == {"ghostsync_0001"}


def test_the_plan_reads_the_chain_alone(tmp_path):
    """No database: what each downgrade from the host's heads would remove, and the line that refuses it."""
    script = chain.script_directory(str(make_host(tmp_path / "host", "postgresql+psycopg2://nowhere/none")))
    at_heads = (GHOSTSYNC_HEAD, "host_0001")
    assert chain.standing(script, ["host_0001"]) == ["ghostsync_0001"]
    assert chain.standing(script, at_heads) == [GHOSTSYNC_HEAD]
    assert chain.standing(script, ["not_a_revision_here"]) == []

    whole = plan.downgrade_plan(script, at_heads, "ghostsync@base")
    assert whole.removed[0] == "host_0001" and whole.host == ("host_0001",) and whole.drops_auth_triggers
    line = plan.host_refusal(script, at_heads, whole, "ghostsync migrate")
    assert line is not None and "`ghostsync migrate downgrade ghostsync@ghostsync_0001`" in line

    alone = plan.downgrade_plan(script, at_heads, "ghostsync@ghostsync_0001")
    assert alone.host == () and "ghostsync_0001" not in alone.removed
    assert plan.host_refusal(script, at_heads, alone, "ghostsync migrate") is None
    hosts_own = plan.downgrade_plan(script, at_heads, "app@base")
    assert hosts_own.removed == ("host_0001",) and plan.host_refusal(script, at_heads, hosts_own, "x") is None


OTHER_REVISION = '''\
"""audit: a host table that needs nothing of ghostsync"""
from alembic import op

revision = "other_0001"
down_revision = None
branch_labels = ("other",)
depends_on = None


def upgrade():
    op.execute("CREATE TABLE public.audit_trail (id integer PRIMARY KEY)")


def downgrade():
    op.execute("DROP TABLE public.audit_trail")
'''


def test_only_host_revisions_that_depend_on_ghostsync_stop_a_downgrade(tmp_path):
    """A host revision that needs nothing of ghostsync is the host's to take down: ``downgrade base`` is refused
    for the revision that depends on ghostsync alone, and named alone; without one, nothing is refused."""
    ini = make_host(tmp_path / "host", "postgresql+psycopg2://nowhere/none")
    (ini.parent / "migrations" / "versions" / "other_0001_audit.py").write_text(OTHER_REVISION)
    script = chain.script_directory(str(ini))
    heads = (GHOSTSYNC_HEAD, "host_0001", "other_0001")
    everything = plan.downgrade_plan(script, heads, "base")
    assert {"host_0001", "other_0001"} <= set(everything.host)
    line = plan.host_refusal(script, heads, everything, "ghostsync migrate")
    assert line is not None and "host_0001" in line and "other_0001" not in line, line

    (ini.parent / "migrations" / "versions" / "host_0001_orders.py").unlink()
    script = chain.script_directory(str(ini))
    heads = (GHOSTSYNC_HEAD, "other_0001")
    everything = plan.downgrade_plan(script, heads, "base")
    assert everything.host == ("other_0001",) and everything.ghostsync
    assert plan.host_refusal(script, heads, everything, "ghostsync migrate") is None


def test_after_ghostsync_is_taken_out_of_a_host_status_says_not_installed(db, tmp_path):
    """A host whose only own revision needs nothing of ghostsync takes ghostsync out entirely: alembic_version
    keeps the host's row, ghostsync's schema stays (a downgrade deletes no data). With the host's config,
    status says "not installed" (exit 2, its code), not "pass the host project's --alembic-config"."""
    ini = make_host(tmp_path / "host", normalize(db.url()))
    (ini.parent / "migrations" / "versions" / "host_0001_orders.py").unlink()
    (ini.parent / "migrations" / "versions" / "other_0001_audit.py").write_text(OTHER_REVISION)
    host_alembic(ini, "upgrade", "heads")
    assert versions(db) == {GHOSTSYNC_HEAD, "other_0001"}
    proc = ghostsync(ini, "migrate", "downgrade", "ghostsync@base", env={"DATABASE_URL": db.url()})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert versions(db) == {"other_0001"}
    assert db.value("SELECT to_regclass('ghostsync.objects') IS NOT NULL") is True
    proc = ghostsync(ini, "status", "--json", env={"DATABASE_URL": db.url()})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "not_installed", proc.stdout
