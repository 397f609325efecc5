"""The pgTAP file ``export-supabase`` writes (``supabase/tests/database/ghostsync.test.sql``), run the
way ``supabase test db`` runs it: pgTAP created in schema ``extensions`` (the CLI does it before
the run), then ``pg_prove --ext .pg --ext .sql -r supabase/tests`` as ``postgres``
(``internal/db/test/test.go``). On a healthy database every test passes; on a broken one the
test that names the breakage fails, and only the tests that follow from it.

Needs Debian's ``postgresql-15-pgtap`` and ``pg_prove`` (``libtap-parser-sourcehandler-pgtap-perl``),
which ``make test`` installs (``make pgtap``); pgTAP's SQL files are copied into the extension
folder of each server. Without them every test here is skipped as NOT AVAILABLE (never passed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ghostsync import pgtap
from ghostsync.export import export_supabase
from ghostsync.testing.fixtures import SupabaseDatabase
from ghostsync.testing.pgtap import install_extension
from tests.seeding import head_revision, seed_ghosts

pytestmark = pytest.mark.pgtap

RESULT = re.compile(r"^(not ok|ok) (\d+) - (.*)$", re.MULTILINE)
HEAD = head_revision()
HEAD_TESTS = 3 + 6 + 3 * 5 + 3 * 4  # installed, no ghosts, no replica-mode setting; 6 triggers, 5 functions x 3,
# 4 signups x 3
SKIPPING = pgtap.REPLICATION_TEST


def _not_available(reason: str) -> None:
    pytest.skip(f"pgTAP: NOT AVAILABLE ({reason}); make pgtap installs it")


@pytest.fixture
def prove(db: SupabaseDatabase, tmp_path: Path):
    """Run the exported pgTAP file against ``db`` as ``supabase test db`` does; returns (code, results, output)."""
    override = os.environ.get("GHOSTSYNC_PG_PROVE")  # as GHOSTSYNC_PGBOUNCER: a path, or anything else for none
    binary = (override if os.access(override, os.X_OK) else None) if override else shutil.which("pg_prove")
    if binary is None:
        _not_available("no pg_prove: Debian's libtap-parser-sourcehandler-pgtap-perl")
    sharedir = Path(db.value("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'"))
    line = install_extension(sharedir / "extension")
    if "NOT AVAILABLE" in line:
        _not_available(line)
    migrations = tmp_path / "supabase" / "migrations"
    export_supabase(migrations)
    tests = tmp_path / "supabase" / "tests"

    def run() -> tuple[int, dict[str, bool], str]:
        db.sql("CREATE EXTENSION IF NOT EXISTS pgtap WITH SCHEMA extensions")  # supautils lets postgres do it
        env = dict(os.environ, PGHOST=db.server.host, PGPORT=str(db.server.port), PGUSER="postgres",
                   PGDATABASE=db.name)
        proc = subprocess.run([binary, "--ext", ".pg", "--ext", ".sql", "-r", "--verbose",
                               "--psql-bin", db.server.psql(), str(tests)],
                              env=env, capture_output=True, text=True, timeout=300)
        db.sql("DROP EXTENSION IF EXISTS pgtap")
        results = {m.group(3): m.group(1) == "ok" for m in RESULT.finditer(proc.stdout)}
        return proc.returncode, results, proc.stdout + proc.stderr

    return run


def failing(results: dict[str, bool]) -> set[str]:
    return {name for name, ok in results.items() if not ok}


def footprint(db: SupabaseDatabase) -> tuple:
    return (db.value("SELECT count(*) FROM auth.users"), db.value("SELECT count(*) FROM public.users"),
            db.value("SELECT count(*) FROM ghostsync.sync_failures"),
            db.value("SELECT count(*) FROM pg_extension WHERE extname = 'pgtap'"))


@pytest.fixture
def head(db):
    seed_ghosts(db)
    db.upgrade()
    return db


def test_healthy_database_passes_and_is_left_as_it_was(head, prove):
    before = footprint(head)
    code, results, output = prove()
    assert code == 0, output
    assert "All tests successful" in output
    assert len(results) == HEAD_TESTS and not failing(results), output
    assert f"ghostsync is installed: {HEAD}" in results
    assert {"the email signup got its profile", "the phone signup got its profile",
            "the anonymous signup got its profile", "the sso signup got its profile"} <= set(results)
    assert footprint(head) == before


def test_revision_behind_head_checks_what_it_declares(db, prove):
    db.upgrade("ghostsync_0006")
    code, results, output = prove()
    assert code == 0, output
    assert "function ghostsync.handle_new_user() matches revision ghostsync_0006" in results
    assert len(results) == 3 + 1 + 3 * 1 + 3 * 4


BROKEN = {
    "trigger disabled": (
        "ALTER TABLE auth.users DISABLE TRIGGER zz_ghostsync_on_auth_user_created",
        {"trigger zz_ghostsync_on_auth_user_created on auth.users exists and is enabled",
         "the email signup got its profile", "the phone signup got its profile",
         "the anonymous signup got its profile", "the sso signup got its profile"}),
    "trigger missing": (
        "DROP TRIGGER ghostsync_on_auth_user_updated ON auth.users",
        {"trigger ghostsync_on_auth_user_updated on auth.users exists and is enabled"}),
    "function edited": (
        "CREATE OR REPLACE FUNCTION ghostsync.handle_users_deleted() RETURNS trigger LANGUAGE plpgsql "
        "SECURITY DEFINER SET search_path = '' AS $$ BEGIN RETURN NULL; END $$",
        {f"function ghostsync.handle_users_deleted() matches revision {HEAD}"}),
    "function made STABLE": (
        "ALTER FUNCTION ghostsync.handle_user_updated() STABLE",
        {f"function ghostsync.handle_user_updated() matches revision {HEAD}"}),
    "function made STRICT": (
        "ALTER FUNCTION ghostsync.handle_users_deleted() STRICT",
        {f"function ghostsync.handle_users_deleted() matches revision {HEAD}"}),
    "the auth role in replica mode here": (
        "DO $$ BEGIN EXECUTE format('ALTER ROLE supabase_auth_admin IN DATABASE %I SET session_replication_role "
        "= replica', current_database()); END $$",
        {SKIPPING}),
    "executable by anon": (
        "GRANT EXECUTE ON FUNCTION ghostsync.handle_new_user() TO anon",
        {"function ghostsync.handle_new_user() is not executable by anon"}),
    "executable by authenticated": (
        "GRANT EXECUTE ON FUNCTION ghostsync.handle_users_deleted() TO authenticated",
        {"function ghostsync.handle_users_deleted() is not executable by authenticated"}),
    "a ghost": (
        "SET session_replication_role = replica; INSERT INTO auth.users (id, email) "
        "VALUES (gen_random_uuid(), 'ghost@example.com')",
        {"no ghosts: every auth.users row has its public.users profile"}),
    "the app's profile table refuses phone users": (
        "ALTER TABLE public.users ADD CONSTRAINT users_email_required CHECK (email IS NOT NULL) NOT VALID",
        {"the phone signup got its profile", "the anonymous signup got its profile"}),
    "a deferred constraint only the commit would check": (
        "CREATE FUNCTION public.no_phone_users() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.phone IS NOT NULL THEN RAISE EXCEPTION 'phone users are not allowed'; END IF; RETURN NULL; END $$; "
        "CREATE CONSTRAINT TRIGGER no_phone_users AFTER INSERT ON auth.users DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION public.no_phone_users()",
        {"phone signup goes through", "the phone signup got its profile"}),
}


@pytest.mark.parametrize("breakage", list(BROKEN))
def test_the_right_test_fails(head, prove, breakage):
    sql, expected = BROKEN[breakage]
    head.sql(sql)
    before = footprint(head)
    code, results, output = prove()
    assert code != 0, output
    assert len(results) == HEAD_TESTS, output
    assert failing(results) == expected, output
    assert footprint(head) == before, "the test rolled back everything it did"


def test_exported_file_is_the_module_script(tmp_path):
    export_supabase(tmp_path / "supabase" / "migrations")
    assert (tmp_path / "supabase" / "tests" / "database" / "ghostsync.test.sql").read_text() == pgtap.script()


def test_an_app_trigger_that_inserts_the_profile_plainly_passes(db, prove):
    """The subscription starter's shape: an app trigger named on_auth_user_created (sorting after ghostsync's)
    INSERTs public.users plainly. The file's SET CONSTRAINTS ALL IMMEDIATE must not make ghostsync's sync
    write first, where the app's INSERT would then collide: every signup goes through."""
    from tests.test_signup_beside_app_triggers import install_app

    install_app(db)  # upgrades to head
    code, results, output = prove()
    assert code == 0, output
    assert len(results) == HEAD_TESTS and not failing(results), output
