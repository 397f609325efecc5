"""The worked example of docs/FOLLOW-UP-REVISIONS.md does what the guide says.

docs/examples/display_name.py and docs/examples/backfill_display_name.py are
the two revisions the guide walks through: what ``ghostsync revision`` writes
on top of the example's base, filled in with the guide's edits
(``tests.test_generator.fill_in_display_name``), and the data revision that
backfills the new column. They are not part of any chain: they live under
docs/, outside every ``version_locations``, with ids (``example_...``) that no
revision of ghostsync or of a host can take. Each test copies them into a
folder of its own.

When ghostsync's chain moves on, the example keeps its base (its
``down_revision``) and keeps working there: these tests run it from its base.
``regenerate()`` rebuilds it on the current head (the guide says when).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from ghostsync import chain, generator
from ghostsync.testing.fixtures import SupabaseDatabase
from tests.paths import REPO
from tests.test_generator import DATA_JOB, DATA_MESSAGE, MESSAGE, fill_in_display_name, write_project_ini

EXAMPLES = REPO / "docs" / "examples"
FOLLOW_UP = EXAMPLES / "display_name.py"
DATA = EXAMPLES / "backfill_display_name.py"
FOLLOW_UP_ID, DATA_ID = "example_display_name", "example_backfill_display_name"
CREATE_DATE = re.compile(r"^Create Date: (.+)$", re.MULTILINE)


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_sources(base: str, create_date: str) -> tuple[str, str]:
    """What the generator and the guide's edits make on top of ``base``."""
    script = chain.script_directory()
    follow_up = fill_in_display_name(
        generator.revision_source(MESSAGE, FOLLOW_UP_ID, base, create_date, chain.declared_at(base, script)))
    example = load_text(follow_up, "expected_display_name")
    declared = chain.declared_at(base, script)
    declared.revision = FOLLOW_UP_ID
    for column in example.DECLARES.columns:
        declared.columns[column.name] = column
    for function in example.DECLARES.functions:
        declared.functions[function.signature] = function
    for trigger in example.DECLARES.triggers:
        declared.triggers[trigger.name] = trigger
    data = generator.data_revision_source(DATA_MESSAGE, DATA_ID, FOLLOW_UP_ID, create_date, declared, DATA_JOB)
    return follow_up, data


def load_text(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(source, name, "exec"), namespace)
    return argparse.Namespace(**namespace)


def code_of(source: str) -> str:
    """A revision without its docstring (the example's data revision says more than the TODO)."""
    return source[source.index('"""\n', 3) + 4:]


def regenerate() -> None:
    """Rebuild the example on the chain's current head (``.venv/bin/python -c "from
    tests.test_follow_up_example import regenerate; regenerate()"``); its data revision's docstring
    is kept."""
    head = chain.head(chain.script_directory())
    create_date = CREATE_DATE.search(FOLLOW_UP.read_text())
    assert create_date
    follow_up, data = expected_sources(head, create_date.group(1))
    kept_doc = DATA.read_text()[:DATA.read_text().index('"""\n', 3) + 4]
    FOLLOW_UP.write_text(follow_up)
    DATA.write_text(re.sub(r"^Revises: .*$", "Revises: example_display_name", kept_doc, flags=re.MULTILINE)
                    + code_of(data))


# -- where it lives ----------------------------------------------------------------------------------

def test_the_example_can_never_clash_with_a_revision_id() -> None:
    for ini in (chain.DEFAULT_INI, REPO / "alembic.ini"):
        locations = generator.version_locations(chain.script_directory(ini))
        assert EXAMPLES.resolve() not in locations
        assert all(not EXAMPLES.resolve().is_relative_to(p) for p in locations)
    assert (load(FOLLOW_UP).revision, load(DATA).revision) == (FOLLOW_UP_ID, DATA_ID)
    assert not generator.OWN_ID.match(FOLLOW_UP_ID) and not FOLLOW_UP_ID.startswith("ghostsync_")
    assert load(DATA).down_revision == FOLLOW_UP_ID
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == ["backfill_display_name.py", "display_name.py"]


def test_the_example_is_what_the_generator_and_the_guides_edits_make() -> None:
    example = load(FOLLOW_UP)
    base = example.down_revision
    assert base in chain.branch_revisions(chain.script_directory()), f"the example's base {base} left the chain"
    create_date = CREATE_DATE.search(FOLLOW_UP.read_text())
    assert create_date
    follow_up, data = expected_sources(base, create_date.group(1))
    assert FOLLOW_UP.read_text() == follow_up, (
        "docs/examples/display_name.py is not what `ghostsync revision` and the guide's edits make on top of "
        f"{base}: run tests.test_follow_up_example.regenerate() (docs/FOLLOW-UP-REVISIONS.md, 'The example')")
    assert code_of(DATA.read_text()) == code_of(data)
    at_base = chain.declared_at(base, chain.script_directory())
    assert at_base.functions["ghostsync.handle_new_user()"] == example.PREVIOUS_HANDLE_NEW_USER
    assert at_base.triggers["zz_ghostsync_on_auth_user_updated"] == example.PREVIOUS_ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED


# -- on a database ----------------------------------------------------------------------------------

@pytest.fixture
def example_ini(tmp_path: Path) -> Path:
    ini = write_project_ini(tmp_path / "project")
    for path in (FOLLOW_UP, DATA):
        shutil.copy(path, ini.parent / "versions" / path.name)
    return ini


def config(db: SupabaseDatabase, ini: Path, **x: str) -> Config:
    cfg = Config(str(ini))
    cfg.cmd_opts = argparse.Namespace(x=[f"database_url={db.url()}", *(f"{k}={v}" for k, v in x.items())])
    cfg.attributes["configure_logger"] = False
    return cfg


def display_names(db: SupabaseDatabase) -> dict[str, str | None]:
    return {str(k): v for k, v in db.sql("SELECT id::text, display_name FROM public.users")}


def definitions(db: SupabaseDatabase) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return (db.sql("SELECT proname::text, prosrc FROM pg_proc WHERE pronamespace = 'ghostsync'::regnamespace "
                   "ORDER BY 1"),
            db.sql("SET search_path = ''; SELECT tgname::text, pg_catalog.pg_get_triggerdef(oid) "
                   "FROM pg_catalog.pg_trigger WHERE tgrelid = 'auth.users'::pg_catalog.regclass "
                   "AND NOT tgisinternal ORDER BY 1"))


def test_the_example_syncs_backfills_and_downgrades_exactly(db: SupabaseDatabase, example_ini: Path) -> None:
    base = load(FOLLOW_UP).down_revision
    command.upgrade(config(db, example_ini), base)
    before = definitions(db)
    with db.auth() as auth:
        named = auth.signup(email="ann@example.com", user_meta={"full_name": "Ann"})
        long_named = auth.signup(email="long@example.com", user_meta={"full_name": "Ω" * 300})
        unnamed = auth.signup(phone="+15550002222")

    command.upgrade(config(db, example_ini, batch_size="1"), DATA_ID)
    names = display_names(db)
    assert (names[str(named)], names[str(long_named)], names[str(unnamed)]) == ("Ann", "Ω" * 100, None)
    assert db.sql("SELECT status, records_affected, details ->> 'batches' FROM public.cleanup_audit_log "
                  "WHERE job_name = %s", (DATA_JOB,)) == [("succeeded", 2, "3")]
    with db.auth() as auth:
        newcomer = auth.signup(email="bo@example.com", user_meta={"full_name": "Bo"})
        auth.admin_update_user(newcomer, user_meta={"full_name": "Bo B."})
        auth.soft_delete(named)
    names = display_names(db)
    assert (names[str(newcomer)], names[str(named)]) == ("Bo B.", None)
    assert db.value("SELECT count(*) FROM ghostsync.sync_failures") == 0

    kept = display_names(db)
    command.downgrade(config(db, example_ini), base)
    assert definitions(db) == before, "the downgrade restores the base's texts exactly"
    assert display_names(db) == kept, "the column and its values stay"
