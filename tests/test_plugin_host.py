"""The ``ghostsync[testing]`` plugin in a host project: the host's chain, on the throwaway database only.

A host made by ``alembic init`` (tests/hosts.py), whose ``alembic.ini`` names a
canary database (standing for the team's real one) and whose own branch has
``public.orders`` on top of ghostsync's ``public.users``, tells the plugin its
configuration in its pytest ini (``ghostsync_alembic_config``).
``supabase_db.upgrade()`` then runs the host's chain, app tables included, on
the throwaway database, with Alembic's stock ``env.py`` (``sqlalchemy.url``)
and with the README's (``DATABASE_URL``, which the developer's shell names the
canary in); the canary is never touched. An ``env.py`` that reads its URL from
anywhere else fails the test with one line before anything runs on the canary.
A live connection that reaches another database is refused too, and a missing
extra or a missing configuration is one line.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import create_engine, pool, text

from ghostsync.testing.fixtures import SupabaseDatabase, SupabaseServer, supabase_database
from tests.hosts import ELSEWHERE, alembic_init_host, run_pytest, untouched

HOST_TEST = '''\
def test_the_hosts_chain_with_its_app_tables(supabase_db):
    supabase_db.upgrade()
    assert supabase_db.value("SELECT count(*) FROM public.alembic_version") == 2  # ghostsync's head, the app's
    with supabase_db.auth() as auth:
        uid = auth.signup(email="host@example.com")
    supabase_db.sql("INSERT INTO public.orders (user_id) VALUES (%s)", (str(uid),))
    assert supabase_db.value("SELECT count(*) FROM public.orders JOIN public.users ON users.id = user_id") == 1
    supabase_db.downgrade("app@base")
    assert supabase_db.value("SELECT to_regclass('public.orders')") is None
'''


@pytest.fixture
def canary(pg: SupabaseServer) -> Iterator[SupabaseDatabase]:
    """A Supabase-like database the chain would install into: the team's real database, in the host's ini."""
    with supabase_database(pg) as database:
        yield database


def host(root: Path, canary: SupabaseDatabase, reads: str) -> Path:
    ini = alembic_init_host(root, canary.url(), reads=reads, app_revision=True)
    (root / "pytest.ini").write_text("[pytest]\nghostsync_alembic_config = alembic.ini\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_orders.py").write_text(HOST_TEST)
    return ini


@pytest.mark.parametrize("reads", ["ini", "DATABASE_URL"])
def test_supabase_db_runs_the_hosts_chain_named_in_its_pytest_ini_and_never_the_canary(
        tmp_path: Path, pg: SupabaseServer, canary: SupabaseDatabase, reads: str) -> None:
    host(tmp_path / "host", canary, reads)
    # the developer's shell names the real database too (the README's env.py reads it)
    proc = run_pytest(tmp_path / "host", pg.major, "tests", env={"DATABASE_URL": canary.url()})
    untouched(canary)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_an_env_py_that_reads_its_url_elsewhere_fails_in_one_line_before_touching_it(
        tmp_path: Path, pg: SupabaseServer, canary: SupabaseDatabase) -> None:
    host(tmp_path / "host", canary, "elsewhere")
    proc = run_pytest(tmp_path / "host", pg.major, "tests", env={ELSEWHERE: canary.url()})
    untouched(canary)
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
    refusals = [line for line in proc.stdout.splitlines() if "refused a connection to" in line]
    # refused from the driver's parameters, before any connection to the canary was opened
    assert refusals and all(f"refused a connection to {canary.name} on 127.0.0.1 port {pg.server.port}:" in line
                            for line in refusals), proc.stdout[-4000:]
    assert "Traceback" not in proc.stdout, proc.stdout[-4000:]


def test_a_live_connection_to_another_database_is_refused_and_closed(db: SupabaseDatabase,
                                                                     canary: SupabaseDatabase) -> None:
    """Connections whose parameters say nothing (a creator, a pooled connection opened earlier) are asked
    where they are."""
    from ghostsync.testing import guard

    opened: list[psycopg2.extensions.connection] = []

    def creator() -> psycopg2.extensions.connection:
        opened.append(psycopg2.connect(canary.url()))
        return opened[-1]

    with pytest.raises(guard.ConnectionElsewhere, match=rf"^ghostsync\[testing\]: refused a connection to "
                                                         rf"{canary.name} on port {canary.server.port}: "), \
            guard.only_on(db.url()):
        create_engine("postgresql+psycopg2://", creator=creator, poolclass=pool.NullPool).connect()
    assert opened and opened[0].closed, "the connection to the other database is closed at once"

    pooled = create_engine(re.sub("^postgresql:", "postgresql+psycopg2:", canary.url()))
    with pooled.connect() as conn:  # before the guard: a connection waiting in the pool
        conn.execute(text("SELECT 1"))
    try:
        with pytest.raises(guard.ConnectionElsewhere), guard.only_on(db.url()), pooled.connect():
            pass
    finally:
        pooled.dispose()
    # the throwaway database itself goes through, by URL and live
    with guard.only_on(db.url()):
        engine = create_engine(re.sub("^postgresql:", "postgresql+psycopg2:", db.url()), poolclass=pool.NullPool)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == db.name


def test_a_missing_testing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "tests").mkdir(parents=True)
    # as on an install without the extra (the plugin itself registers through ghostsync's entry point)
    (root / "conftest.py").write_text("import sys\n\nsys.modules['pytest_postgresql.janitor'] = None\n")
    (root / "tests" / "test_it.py").write_text("def test_it(supabase_db):\n    pass\n")
    proc = run_pytest(root, 17, "tests", timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("ERROR: ghostsync's fixtures need the testing extra (no module "
                                   "'pytest_postgresql.janitor'): pip install 'ghostsync[testing]'"), proc.stderr


def test_a_configuration_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_it.py").write_text("def test_it(supabase_db):\n    pass\n")
    proc = run_pytest(root, 17, "--ghostsync-alembic-config", "nowhere/alembic.ini", "tests", timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("ERROR: --ghostsync-alembic-config: no Alembic configuration at "
                                   f"{root / 'nowhere' / 'alembic.ini'}"), proc.stderr


def test_the_plugin_names_its_setting_in_pytest_help(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, 17, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    help_text = textwrap.dedent(proc.stdout)
    assert "--ghostsync-alembic-config=PATH" in help_text and "ghostsync_alembic_config" in help_text


def test_supabase_db_alembic_cli_runs_a_hosts_env_py_on_the_throwaway_database_only(
        tmp_path: Path, db: SupabaseDatabase, canary: SupabaseDatabase) -> None:
    """``alembic_cli`` (the alembic command line in a subprocess) with the host's configuration."""
    stock = dataclasses.replace(db, alembic_ini=alembic_init_host(tmp_path / "stock", canary.url(),
                                                                  app_revision=True))
    proc = stock.alembic_cli("upgrade", "heads")
    untouched(canary)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert db.value("SELECT to_regclass('public.orders') IS NOT NULL")

    elsewhere = dataclasses.replace(db, alembic_ini=alembic_init_host(tmp_path / "elsewhere", canary.url(),
                                                                      reads="elsewhere"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ELSEWHERE, canary.url())
        proc = elsewhere.alembic_cli("downgrade", "ghostsync@base")
    untouched(canary)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(
        f"ghostsync[testing]: refused a connection to {canary.name} on 127.0.0.1 port "), proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert db.value("SELECT count(*) FROM public.alembic_version") == 2, "nothing was downgraded"
