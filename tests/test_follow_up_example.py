"""The follow-up workflow: `alembic revision` carries the conventions, and the
worked example of docs/FOLLOW-UP-REVISIONS.md (docs/examples/0008_display_name.py)
does what the document says, on top of ghostsync's chain.

The example is not part of the chain: each test copies it into its own
directory and adds that directory to ``version_locations``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from alembic.command import downgrade, revision, upgrade
from alembic.config import Config

from ghostsync import chain
from tests.paths import REPO
from tests.seeding import ghost_count

EXAMPLE = REPO / "docs" / "examples" / "0008_display_name.py"
GHOSTSYNC_VERSIONS = REPO / "ghostsync" / "migrations" / "versions"
HEAD = chain.head()
EXAMPLE_REVISION = "ghostsync_0008"
SYNCED_FUNCTIONS = ("public.handle_new_user()", "public.handle_user_updated()")
LONG_NAME = "Ω" * 300


def load_example():
    spec = importlib.util.spec_from_file_location("ghostsync_example_0008", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "example_versions"
    directory.mkdir()
    shutil.copy(EXAMPLE, directory / EXAMPLE.name)
    return directory


def config_with_example(db, example_dir: Path, **x: str):
    config = db.alembic_config(**x)
    config.set_main_option("version_locations", f"{GHOSTSYNC_VERSIONS} {example_dir}")
    return config


def set_user_meta(db, uid, meta) -> None:
    """The auth service's updateUser: unqualified table, as supabase_auth_admin."""
    db.sql("UPDATE users SET raw_user_meta_data = %s, updated_at = now() WHERE id = %s",
           (json.dumps(meta), str(uid)), user="supabase_auth_admin")


def display_names(db) -> dict[str, str | None]:
    return dict(db.sql("SELECT id::text, display_name FROM public.users"))


def function_state(db, signature: str) -> tuple:
    return tuple(db.sql(
        "SELECT prosrc, prosecdef, proconfig, "
        "has_function_privilege('anon', oid, 'EXECUTE'), "
        "has_function_privilege('authenticated', oid, 'EXECUTE') "
        "FROM pg_proc WHERE oid = to_regprocedure(%s)", (signature,))[0])


def updated_trigger(db) -> str:
    return db.value("SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                    "WHERE tgrelid = 'auth.users'::regclass AND tgname = 'on_auth_user_updated'")


def display_name_runs(db) -> list[tuple]:
    return db.sql("SELECT status, records_affected, details ->> 'batches' FROM public.cleanup_audit_log "
                  "WHERE job_name = 'backfill_display_name' ORDER BY id")


# -- the workflow, without a database ----------------------------------------------

def test_alembic_revision_writes_a_file_with_the_conventions(tmp_path):
    config = Config(str(chain.DEFAULT_INI))
    config.attributes["configure_logger"] = False
    config.set_main_option("version_locations", f"{GHOSTSYNC_VERSIONS} {tmp_path}")
    revision(config, message="profiles carry display_name", rev_id="ghostsync_0999",
                     version_path=str(tmp_path))
    [written] = list(tmp_path.glob("ghostsync_0999_*.py"))
    source = written.read_text()
    for convention in (
        'revision = "ghostsync_0999"',
        f'down_revision = "{HEAD}"',
        "from ghostsync.migrations.kit import execute_guarded",
        "UPGRADE_SQL = r\"\"\"",
        "DOWNGRADE_SQL = r\"\"\"",
        "FUNCTIONS: dict[str, str] = {}",
        "TRIGGERS: tuple[str, ...] = ()",
        "SET search_path = ''",
        "restores the\n  previous text exactly",
        "never changes once released",
    ):
        assert convention in source, convention
    compile(source, str(written), "exec")


def test_example_revises_the_head_and_copies_the_previous_texts_verbatim():
    example = load_example()
    assert example.down_revision == HEAD, (
        f"docs/examples/0008_display_name.py revises {example.down_revision}, the chain's head is {HEAD}: "
        "bring the example (and its PREVIOUS_* texts) up to the head")
    at_head = chain.installed_at(HEAD)
    previous = {
        "public.handle_new_user()": example.PREVIOUS_HANDLE_NEW_USER,
        "public.handle_user_updated()": example.PREVIOUS_HANDLE_USER_UPDATED,
    }
    for signature, statement in previous.items():
        assert chain.function_body(statement) == at_head.functions[signature], signature
    for sql in example.FUNCTIONS.values():
        assert "SECURITY DEFINER\nSET search_path = ''" in sql
    assert set(example.FUNCTIONS) == set(SYNCED_FUNCTIONS)
    assert set(example.TRIGGERS) <= set(at_head.triggers)


def test_example_renders_offline(example_dir):
    config = Config(str(REPO / "alembic.ini"), output_buffer=io.StringIO(),
                    cmd_opts=argparse.Namespace(x=["batch_size=7"]))
    config.attributes["configure_logger"] = False
    config.set_main_option("version_locations", f"{GHOSTSYNC_VERSIONS} {example_dir}")
    upgrade(config, f"{HEAD}:{EXAMPLE_REVISION}", sql=True)
    sql = config.output_buffer.getvalue()
    assert "ALTER TABLE public.users ADD COLUMN display_name text" in sql
    assert "SET LOCAL lock_timeout" in sql
    assert "'backfill_display_name'" in sql and "LIMIT 7" in sql


# -- the example on a Supabase-like database ------------------------------------------

def test_display_name_example_syncs_backfills_and_downgrades_exactly(db, example_dir):
    db.upgrade()  # ghostsync's chain, head
    before = {sig: function_state(db, sig) for sig in SYNCED_FUNCTIONS}
    trigger_before = updated_trigger(db)
    with db.auth() as auth:
        named = auth.signup(email="ann@example.com", user_meta={"display_name": "Ann"})
        long_named = auth.signup(email="long@example.com", user_meta={"display_name": LONG_NAME})
        not_a_string = auth.signup(email="obj@example.com", user_meta={"display_name": {"role": "admin"}})
        unnamed = auth.signup(phone="+15550002222")

    upgrade(config_with_example(db, example_dir, batch_size="2"), EXAMPLE_REVISION)
    assert db.value("SELECT version_num FROM public.alembic_version") == EXAMPLE_REVISION

    # The backfill filled the profiles of users who signed up before it.
    names = display_names(db)
    assert names[str(named)] == "Ann"
    assert names[str(long_named)] == "Ω" * 100, "cut to 100 characters"
    assert names[str(not_a_string)] is None, "only a JSON string is copied"
    assert names[str(unnamed)] is None
    assert display_name_runs(db) == [("succeeded", 2, "2")], "4 profiles in batches of 2; 2 filled"

    # The functions keep their security properties; the texts are the example's.
    example = load_example()
    for signature in SYNCED_FUNCTIONS:
        prosrc, secdef, config, anon, authenticated = function_state(db, signature)
        assert prosrc == chain.function_body(example.FUNCTIONS[signature])
        assert (secdef, config, anon, authenticated) == (True, ['search_path=""'], False, False)

    # A signup with a display name makes a profile that has it.
    with db.auth() as auth:
        newcomer = auth.signup(email="bo@example.com", user_meta={"display_name": "Bo"})
    assert display_names(db)[str(newcomer)] == "Bo"

    # A metadata update follows; a sign-in or another metadata key writes nothing.
    set_user_meta(db, newcomer, {"display_name": "Bo B."})
    assert display_names(db)[str(newcomer)] == "Bo B."
    stamp = db.value("SELECT updated_at FROM public.users WHERE id = %s", (str(newcomer),))
    with db.auth() as auth:
        auth.sign_in(newcomer)
    set_user_meta(db, newcomer, {"display_name": "Bo B.", "theme": "dark"})
    assert db.value("SELECT updated_at FROM public.users WHERE id = %s", (str(newcomer),)) == stamp
    set_user_meta(db, newcomer, {"display_name": "<script>x</script>" * 20})
    assert display_names(db)[str(newcomer)] == ("<script>x</script>" * 20)[:100], "stored as text, cut"

    # A soft delete clears the metadata, and so the display name.
    with db.auth() as auth:
        auth.soft_delete(named)
    assert display_names(db)[str(named)] is None
    assert db.value("SELECT count(*) FROM ghostsync.sync_failures") == 0

    # Downgrade: the previous function texts and trigger exactly; the column and its values stay.
    kept = display_names(db)
    downgrade(config_with_example(db, example_dir), HEAD)
    assert db.value("SELECT version_num FROM public.alembic_version") == HEAD
    for signature in SYNCED_FUNCTIONS:
        assert function_state(db, signature) == before[signature]
        assert before[signature][0] == chain.installed_at(HEAD).functions[signature]
    assert updated_trigger(db) == trigger_before
    assert display_names(db) == kept

    # While downgraded nothing copies display names; the re-upgrade's backfill does.
    with db.auth() as auth:
        meanwhile = auth.signup(email="cy@example.com", user_meta={"display_name": "Cy"})
    set_user_meta(db, long_named, {"display_name": "Lo"})
    assert display_names(db)[str(meanwhile)] is None
    upgrade(config_with_example(db, example_dir), EXAMPLE_REVISION)
    names = display_names(db)
    assert (names[str(meanwhile)], names[str(long_named)]) == ("Cy", "Lo")
    assert [run[:2] for run in display_name_runs(db)] == [("succeeded", 2), ("succeeded", 2)]
    assert ghost_count(db) == 0
    assert updated_trigger(db) != trigger_before
