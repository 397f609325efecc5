"""A host project set up as the README says, on what ``alembic init`` writes today (issue 19 §1b, §4).

The host is made the way a new user makes it, from the wheel alone (the
session's ``installed_wheel``, tests/test_wheel.py): ``alembic init migrations``
with the virtualenv's Alembic, then the README's host-setup lines applied to
the ini it wrote exactly as the README words them (read from README.md, so the
docs and this test cannot drift): the keys it says ``alembic init`` already
writes are changed in place, the others added. Its ``env.py`` is the stock one
with ``transaction_per_migration=True`` added to each ``context.configure(``
call, as the README asks. Its ``sqlalchemy.url`` is a bare ``postgresql://``
URL, the form Supabase hands out.

- the README's setup on a fresh ``alembic init`` ini installs ghostsync with
  ``alembic upgrade heads`` and ``ghostsync status`` finds it;
- an ``env.py`` keeping the version table in another schema
  (``version_table_schema="app_meta"``) installs, and ``status``, ``backfill``
  and ``repair`` find ghostsync's revision there;
- ``export-supabase --alembic-config`` of that host writes files that record ghostsync in
  the host's version table (not a second one in ``public``), which ``db push`` applies, and
  the verification script and pgTAP file written beside them read that table;
- every URL form a host's settings produce works with ghostsync's commands;
- ``migrate`` without a URL names ``--database-url``, as every command does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ghostsync import chain, urls
from ghostsync.testing import supabase_cli
from ghostsync.testing.fixtures import SupabaseDatabase
from tests.paths import REPO
from tests.test_verify_sql import run_script
from tests.test_wheel import Installed, installed_wheel  # noqa: F401  (the session's wheel and virtualenv)

HEAD = chain.head(chain.script_directory())
HOST_SECTION = "## Inside an existing Alembic project"
APP_SCHEMA = "app_meta"


# -- the README's host setup, read from the README ---------------------------------------------------

def readme_host_setup() -> tuple[list[tuple[str, str]], set[str]]:
    """The ``[alembic]`` lines of the README's host section, and the keys it says ``alembic init``
    already writes (to be changed in place rather than added)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(HOST_SECTION):]
    section = section[:section.index("\n## ", 1)]
    block = re.search(r"```ini\n(.*?)```", section, re.DOTALL)
    assert block, "the README's host section has no ini block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert lines[0] == "[alembic]", lines
    settings = [(k.strip(), v.strip()) for k, _, v in (line.partition("=") for line in lines[1:])]
    said = re.search(r"`alembic init` \(Alembic [0-9.]+ and later\) already writes (.*?): change those lines",
                     section, re.DOTALL)
    return settings, set(re.findall(r"`([a-z_.]+)`", said.group(1))) if said else set()


def apply_readme(ini: Path, url: str) -> str:
    """The README's lines applied to ``ini`` as worded; the README's URL is the one Supabase hands
    out, replaced by the throwaway database's (same form). Returns the README's URL."""
    settings, change = readme_host_setup()
    text = ini.read_text()
    readme_url = ""
    for key, value in settings:
        if key == "sqlalchemy.url":
            readme_url, value = value, url.replace("%", "%%")
        line = f"{key} = {value}"
        present = re.compile(rf"^{re.escape(key)}\s*=.*$", re.MULTILINE)
        if key in change:
            assert present.search(text), f"the README says alembic init writes {key}; it did not"
            text = present.sub(lambda _, line=line: line, text, count=1)
        else:
            text = text.replace("[alembic]\n", f"[alembic]\n{line}\n", 1)
    ini.write_text(text)
    return readme_url


def stock_env_with(env_py: Path, *options: str) -> None:
    """The README's env.py change (``transaction_per_migration=True`` in each ``context.configure(``),
    with ``options`` beside it."""
    text = env_py.read_text()
    assert text.count("context.configure(\n") == 2, "the stock env.py has two context.configure calls"
    added = "".join(f"        {o},\n" for o in ("transaction_per_migration=True", *options))
    env_py.write_text(text.replace("context.configure(\n", "context.configure(\n" + added))


def init_host(installed: Installed, root: Path, db: SupabaseDatabase, *env_options: str) -> Path:
    """``alembic init migrations`` in ``root``, then the README's setup; the host's ini must parse."""
    root.mkdir()
    proc = installed.run("alembic", "init", "migrations", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ini = root / "alembic.ini"
    readme_url = apply_readme(ini, db.url())
    stock_env_with(root / "migrations" / "env.py", *env_options)
    heads = alembic(installed, ini, "heads")
    assert heads.returncode == 0 and f"{HEAD} (ghostsync) (head)" in heads.stdout, heads.stdout + heads.stderr
    # the form Supabase hands out, which the README gives as it is
    assert readme_url.startswith("postgresql://") and db.url().startswith("postgresql://"), readme_url
    return ini


def alembic(installed: Installed, ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The host's own ``alembic``: it reads the URL from its ini (no DATABASE_URL in its environment)."""
    return installed.run("alembic", "-c", str(ini), *args, cwd=ini.parent)


def ghostsync(installed: Installed, db: SupabaseDatabase, ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return installed.run("ghostsync", "--alembic-config", str(ini), *args, cwd=ini.parent, url=db.url())


def status(installed: Installed, db: SupabaseDatabase, ini: Path) -> dict[str, object]:
    proc = ghostsync(installed, db, ini, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found: dict[str, object] = json.loads(proc.stdout)
    return found


# -- the tests ---------------------------------------------------------------------------------------

def test_the_readme_host_setup_works_on_the_ini_alembic_init_writes(installed_wheel: Installed,  # noqa: F811
                                                                    db: SupabaseDatabase, tmp_path: Path) -> None:
    installed = installed_wheel
    ini = init_host(installed, tmp_path / "host", db)
    # the bare postgresql:// URL: psycopg 3 in the host's process (SQLAlchemy 2.1's default for it)
    upgraded = alembic(installed, ini, "upgrade", "heads")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert db.value("SELECT version_num FROM public.alembic_version") == HEAD
    found = status(installed, db, ini)
    assert (found["revision"], found["at_head"], found["healthy"]) == (HEAD, True, True), found


def test_a_version_table_in_another_schema(installed_wheel: Installed, db: SupabaseDatabase,  # noqa: F811
                                           tmp_path: Path) -> None:
    installed = installed_wheel
    db.sql(f"CREATE SCHEMA {APP_SCHEMA}", user="postgres")  # the app's own schema, made by the app
    ini = init_host(installed, tmp_path / "host", db, f'version_table_schema="{APP_SCHEMA}"')
    upgraded = alembic(installed, ini, "upgrade", "heads")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert db.value(f"SELECT version_num FROM {APP_SCHEMA}.alembic_version") == HEAD
    assert db.value("SELECT to_regclass('public.alembic_version')") is None
    found = status(installed, db, ini)
    assert (found["revision"], found["at_head"], found["healthy"]) == (HEAD, True, True), found
    for command in (("backfill", "--dry-run"), ("repair",)):
        proc = ghostsync(installed, db, ini, *command)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    # a leftover table of another Alembic project beside it does not confuse the search
    db.sql("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY); "
           "INSERT INTO public.alembic_version VALUES ('other_0001')", user="postgres")
    assert status(installed, db, ini)["revision"] == HEAD
    # two tables both recording ghostsync's branch: one line naming both, exit 2
    db.sql(f"UPDATE public.alembic_version SET version_num = '{HEAD}'", user="postgres")
    proc = ghostsync(installed, db, ini, "status")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert f"{APP_SCHEMA}.alembic_version" in lines[0] and "public.alembic_version" in lines[0]


def test_export_supabase_writes_to_the_version_table_the_host_keeps(installed_wheel: Installed,  # noqa: F811
                                                                     db: SupabaseDatabase, tmp_path: Path) -> None:
    installed = installed_wheel
    db.sql(f"CREATE SCHEMA {APP_SCHEMA}", user="postgres")
    ini = init_host(installed, tmp_path / "host", db, f'version_table_schema="{APP_SCHEMA}"')
    folder = tmp_path / "host" / "supabase" / "migrations"
    proc = ghostsync(installed, db, ini, "export-supabase", str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pushed = supabase_cli.push(db.url(), folder)
    assert pushed.ok, pushed.text
    assert db.value(f"SELECT version_num FROM {APP_SCHEMA}.alembic_version") == HEAD
    assert db.value("SELECT to_regclass('public.alembic_version')") is None, "one version table, the host's"
    found = status(installed, db, ini)
    assert (found["revision"], found["at_head"], found["healthy"]) == (HEAD, True, True), found
    # the read-only verification script written beside the folder reads the same table; so does the pgTAP file
    row = run_script(db, (folder.parent / "verify-trigger.sql").read_text())
    assert (row["up"], row["revision"], row["healthy"]) == (True, HEAD, True), row
    pgtap_file = (folder.parent / "tests" / "database" / "ghostsync.test.sql").read_text()
    assert f"FROM {APP_SCHEMA}.alembic_version" in pgtap_file and "public.alembic_version" not in pgtap_file
    # the host's own Alembic sees ghostsync at head: nothing left to run
    upgraded = alembic(installed, ini, "upgrade", "heads")
    assert upgraded.returncode == 0 and "Running upgrade" not in upgraded.stderr, upgraded.stdout + upgraded.stderr


# -- every URL form, in ghostsync's own commands (the checkout's runtime) ----------------------------

URL_FORMS = [
    ("postgres", ""),
    ("postgresql", ""),
    ("postgresql", "?sslmode=disable"),
    ("postgresql+psycopg2", "?sslmode=disable&connect_timeout=5"),
    ("postgresql+psycopg", "?sslmode=disable"),
    ("postgresql+asyncpg", ""),
    ("postgresql+asyncpg", "?ssl=disable&prepared_statement_cache_size=0&statement_cache_size=0"),
]


def run(*argv: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GHOSTSYNC_ALEMBIC_CONFIG")}
    if url is not None:
        env["DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "ghostsync", *argv], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)


def test_every_url_form_a_host_produces_works_with_every_command(db: SupabaseDatabase) -> None:
    db.upgrade()
    for scheme, query in URL_FORMS:
        url = db.url(scheme=scheme) + query
        proc = run("status", "--json", url=url)
        assert proc.returncode == 0, f"{scheme}{query}: {proc.stdout}{proc.stderr}"
        assert json.loads(proc.stdout)["revision"] == HEAD
    url = db.url(scheme="postgresql+asyncpg") + "?ssl=disable&prepared_statement_cache_size=0"
    for command in (("backfill", "--dry-run"), ("repair",), ("migrate", "current")):
        proc = run(*command, url=url)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"{command}: {proc.stdout}{proc.stderr}"


def test_asyncpg_settings_become_libpq_ones_in_one_place() -> None:
    assert urls.normalize("postgresql+asyncpg://u:p@h:6543/d?ssl=require&prepared_statement_cache_size=0") == \
        "postgresql+psycopg2://u:p@h:6543/d?sslmode=require"
    assert urls.normalize("postgresql+psycopg://u@h/d?sslmode=require") == "postgresql+psycopg2://u@h/d?sslmode=require"


@pytest.mark.parametrize("command", [("migrate", "current"), ("status",), ("backfill",), ("repair",)])
def test_no_url_is_one_message_naming_database_url(command: tuple[str, ...]) -> None:
    proc = run(*command)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    # (how many times migrate prints its failure is issue 19 §7's, not this test's)
    lines = [line for line in out.splitlines() if "no database URL" in line]
    assert lines and all("pass --database-url or set DATABASE_URL" in line for line in lines), out
