"""ghostsync deployed with the Supabase CLI is as safe as with Alembic (issue 13).

The harness (``ghostsync.testing.supabase_cli``) applies a ``supabase/migrations`` folder the
way the CLI's Go engine does (github.com/supabase/cli ``apps/cli-go``): its statement
splitter follows ``pkg/parser/state.go`` and ``token.go``, its file listing and pending
rule ``pkg/migration/file.go``, ``list.go``, ``apply.go`` (``FindPendingMigrations``) and
``internal/migration/up/up.go``, and each file runs as ``pkg/migration/apply.go``
(``ApplyMigrations``) and ``file.go`` (``ExecBatch``) run it: ``RESET ALL``, then every
statement and the history row (``history.go``) in one pipeline with one Sync. The first
tests show the harness behaves like that on the real server; the rest prove what the
exported files do under it, on every PostgreSQL version of the suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest

from ghostsync import chain
from ghostsync.export import export_supabase
from ghostsync.testing import supabase_cli
from ghostsync.testing.fixtures import SupabaseDatabase
from ghostsync.testing.supabase import grant_database_privileges
from tests.seeding import revisions_base_to_head, seed_app_with_profiles, seed_bulk_ghosts, seed_ghosts

T0 = datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc)
REVISIONS = revisions_base_to_head()  # the packaged chain, oldest first
HEAD, PREVIOUS = REVISIONS[-1], REVISIONS[-2]
APP_NEWER = "20261201080000_app_add_avatars.sql"  # a team migration newer than every ghostsync Create Date


# -- helpers ------------------------------------------------------------------------------------------

@contextmanager
def clone(db: SupabaseDatabase):
    """A byte-identical copy of ``db`` (same ids, same rows) to compare two roads on."""
    name = f"c_{uuid.uuid4().hex[:12]}"
    janitor = db.owner.janitor(name, template_dbname=db.name)
    janitor.init()
    grant_database_privileges(db.server.url(name))
    copy = SupabaseDatabase(db.owner, name)
    try:
        yield copy
    finally:
        copy.dispose()
        janitor.drop()


def folder(tmp_path: Path, name: str = "project", **kwargs) -> Path:
    migrations = tmp_path / name / "supabase" / "migrations"
    export_supabase(migrations, now=kwargs.pop("now", T0), **kwargs)
    return migrations


def only(migrations: Path, keep, into: Path) -> Path:
    """A copy of ``migrations`` holding the files ``keep(name)`` selects."""
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(migrations.iterdir()):
        if keep(path.name):
            shutil.copy(path, into / path.name)
    return into


def state(db: SupabaseDatabase, *, with_times: bool = False) -> dict:
    """What ghostsync installed and wrote, read from the catalogs and its tables."""
    recorded = "kind, name, created, revision, owner" + (", recorded_at" if with_times else "")
    out = {
        "functions": db.sql(
            "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.prosecdef, p.proconfig, p.proacl::text, "
            "pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.pronamespace = 'ghostsync'::regnamespace ORDER BY 1"),
        "triggers": db.sql(
            "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger WHERE tgrelid "
            "IN ('auth.users'::regclass, to_regclass('public.users')) AND NOT tgisinternal ORDER BY 1, 2"),
        "grants": db.sql(
            "SELECT c.oid::regclass::text, c.relkind, c.relrowsecurity, pg_get_userbyid(c.relowner), c.relacl::text "
            "FROM pg_class c WHERE c.relnamespace IN ('public'::regnamespace, to_regnamespace('ghostsync')) "
            "AND c.relkind IN ('r', 'S') ORDER BY 1"),
        "schema": db.sql("SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname = 'ghostsync'"),
        "columns": db.sql(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = to_regclass('public.users') AND attnum > 0 AND NOT attisdropped ORDER BY attnum"),
        "objects": db.sql(f"SELECT {recorded} FROM ghostsync.objects ORDER BY 1, 2")
        if db.value("SELECT to_regclass('ghostsync.objects')") else [],
        "profiles": db.sql("SELECT * FROM public.users ORDER BY id") if db.value("SELECT to_regclass('public.users')")
        else [],
        "alembic_version": db.sql("SELECT version_num FROM public.alembic_version ORDER BY 1")
        if db.value("SELECT to_regclass('public.alembic_version')") else None,
        "audit": db.sql("SELECT job_name, status, records_affected FROM public.cleanup_audit_log ORDER BY id")
        if db.value("SELECT to_regclass('public.cleanup_audit_log')") else [],
        "failures": db.sql("SELECT * FROM ghostsync.sync_failures ORDER BY user_id")
        if db.value("SELECT to_regclass('ghostsync.sync_failures')") else [],
    }
    if with_times:
        out["audit_rows"] = db.sql("SELECT * FROM public.cleanup_audit_log ORDER BY id") if out["audit"] else []
    return out


def history(db: SupabaseDatabase) -> list[tuple]:
    return db.sql("SELECT version, name FROM supabase_migrations.schema_migrations ORDER BY version")


def ghosts(db: SupabaseDatabase) -> int:
    return int(db.value("SELECT count(*) FROM auth.users u WHERE NOT EXISTS "
                        "(SELECT 1 FROM public.users p WHERE p.id = u.id)"))


def pushed(db: SupabaseDatabase, migrations: Path, **kwargs) -> supabase_cli.PushResult:
    result = supabase_cli.push(db.url(), migrations, **kwargs)
    assert result.ok, result.text
    assert result.warnings == [], result.text
    return result


def status_of(db: SupabaseDatabase):
    from sqlalchemy import create_engine

    from ghostsync import status
    from ghostsync.urls import normalize

    engine = create_engine(normalize(db.url()))
    try:
        with engine.connect() as conn:
            return status.collect(conn)
    finally:
        engine.dispose()


# -- the splitter (pkg/parser/state.go, token.go) -------------------------------------------------------

@pytest.mark.parametrize(("sql", "expected"), [
    ("select 1; select 2;", ["select 1", "select 2"]),
    # comments stay with the statement they precede; one after the last ; is a statement of its own
    ("\n-- first\nselect 1;\n/* second */ select 2; -- trailing", ["-- first\nselect 1", "/* second */ select 2",
                                                                    "-- trailing"]),
    ("select 1 -- not here; \n + 1; select 2", ["select 1 -- not here; \n + 1", "select 2"]),
    ("select /* a; /* nested; */ still; */ 1; select 2", ["select /* a; /* nested; */ still; */ 1", "select 2"]),
    ("select 4 / 2; select 3", ["select 4 / 2", "select 3"]),
    ("select 1 - 1; select 3", ["select 1 - 1", "select 3"]),
    # quotes: '' and "" escape; a backslash inside quotes is an ordinary character
    ("select 'a;b', 'it''s; fine'; select 2", ["select 'a;b', 'it''s; fine'", "select 2"]),
    ('select 1 as "odd;name""x"; select 2', ['select 1 as "odd;name""x"', "select 2"]),
    ("select E'a\\'; b'; select 2", ["select E'a\\'", "b'; select 2"]),
    # a backslash outside quotes skips the next character
    ("select 1 \\; select 2", ["select 1 \\; select 2"]),
    # dollar quotes, anonymous and tagged, nested inside another tag; $1 is a parameter
    ("do $$ begin perform 1; end $$; select 2", ["do $$ begin perform 1; end $$", "select 2"]),
    ("do $outer$ begin execute $inner$ select 1; $inner$; end $outer$; select 2",
     ["do $outer$ begin execute $inner$ select 1; $inner$; end $outer$", "select 2"]),
    ("select $1; select $2", ["select $1", "select $2"]),
    ("select $$$; select 2", ["select $$$", "select 2"]),  # the third $ closes the quote at once
    # BEGIN ATOMIC bodies end at the first END in ready state (no word boundary)
    ("create function f() returns int language sql begin atomic select 1; select 2; end; select 3",
     ["create function f() returns int language sql begin atomic select 1; select 2; end", "select 3"]),
    ("create function f() returns int begin atomic select spend; select 2; end; select 3",
     ["create function f() returns int begin atomic select spend", "select 2", "end", "select 3"]),
    ("create function atomic_ok() returns void language plpgsql as $$ begin null; end; $$; select 1",
     ["create function atomic_ok() returns void language plpgsql as $$ begin null; end; $$", "select 1"]),
    # parentheses protect one level only (CREATE RULE ... DO (a; b))
    ("create rule r as on insert to t do (notify a; notify b); select 1",
     ["create rule r as on insert to t do (notify a; notify b)", "select 1"]),
    ("select ((1); select 2)", ["select ((1)", "select 2)"]),
    ("select 1;;  ;\n", ["select 1"]),
])
def test_splitter_follows_the_cli_parser(sql, expected):
    assert supabase_cli.split_and_trim(sql) == expected


def test_split_keeps_every_character():
    sql = "select 'x;'; -- c\n$q$;$q$; /* ; */"
    assert "".join(supabase_cli.split(sql)) == sql


def test_exported_files_are_one_statement_each(tmp_path):
    migrations = folder(tmp_path)
    for path in sorted(migrations.iterdir()):
        statements = supabase_cli.split_and_trim(path.read_text())
        assert len(statements) == 1, path.name
        assert statements[0].splitlines()[-1] == "$ghostsync_migration$", path.name


# -- file listing and the pending rule (pkg/migration/list.go, apply.go) --------------------------------

def test_pending_rule_of_db_push(tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for name in ("20240101000000_a.sql", "20240102000000_b.sql", "README.md", "20240103000000_c.SQL",
                 "x_d.sql", "20240104000000_.sql"):
        (migrations / name).write_text("select 1;")
    (migrations / "sub").mkdir()
    skipped: list[str] = []
    local = supabase_cli.local_migrations(migrations, skipped)
    assert [(m.version, m.name) for m in local] == [("20240101000000", "a"), ("20240102000000", "b"),
                                                     ("20240104000000", "")]
    assert len(skipped) == 3 and all("file name must match pattern" in s for s in skipped)
    pending = supabase_cli.find_pending(local, ["20240101000000"])
    assert [m.version for m in pending] == ["20240102000000", "20240104000000"]
    with pytest.raises(supabase_cli.PushRefused, match="Found local migration files to be inserted before"):
        supabase_cli.find_pending(local, ["20240101000000", "20240104000000"])
    assert [m.version for m in supabase_cli.find_pending(local, ["20240101000000", "20240104000000"],
                                                         include_all=True)] == ["20240102000000"]
    with pytest.raises(supabase_cli.PushRefused, match="Remote migration versions not found"):
        supabase_cli.find_pending(local, ["20231231000000"])


# -- the harness on the server: what the CLI's pipeline does --------------------------------------------

def test_harness_reproduces_the_cli_batch(db, tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "20240101000000_ok.sql").write_text(
        "create table public.t (a int);\n"
        "set local lock_timeout = '1234ms';\n"
        "insert into public.t select 1 where current_setting('lock_timeout') = '1234ms';\n-- end\n")
    (migrations / "20240102000000_lock.sql").write_text("insert into public.t values (2);\nlock table public.t;\n")
    (migrations / "20240103000000_never.sql").write_text("insert into public.t values (3);\n")
    result = supabase_cli.push(db.url("postgres"), migrations)
    first, second = result.files
    assert first.ok and [str(n) for n in first.notices] == [
        "WARNING (25P01): SET LOCAL can only be used in transaction blocks"]
    assert db.value("SELECT count(*) FROM public.t WHERE a = 1") == 1, "SET LOCAL still took effect"
    assert not second.ok and second.error.sqlstate == "25P01" and second.failed_statement == 1
    assert "LOCK TABLE can only be used in transaction blocks (SQLSTATE 25P01)\nAt statement: 1" in result.text
    assert db.value("SELECT count(*) FROM public.t") == 1, "the failed file left nothing; the next never ran"
    assert history(db) == [("20240101000000", "ok")]
    assert db.value("SELECT statements FROM supabase_migrations.schema_migrations") == first.statements
    assert len(result.files) == 2


# -- exported file names --------------------------------------------------------------------------------

def test_timestamps_sort_after_the_team_and_never_change(tmp_path):
    migrations = tmp_path / "supabase" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "20240301000000_app_init.sql").write_text("create table public.todos (id int);\n")
    (migrations / APP_NEWER).write_text("alter table public.todos add column avatar text;\n")
    written = export_supabase(migrations, now=T0)
    files = [p for p in written if p.parent == migrations]
    assert [p.name for p in written[-2:]] == ["verify-trigger.sql", "ghostsync.test.sql"]
    assert written[-2] == tmp_path / "supabase" / "verify-trigger.sql"
    assert written[-1] == tmp_path / "supabase" / "tests" / "database" / "ghostsync.test.sql"
    versions = [p.name[:14] for p in files]
    assert all(len(v) == 14 and v.isdigit() for v in versions)
    assert versions[0] == "20261201080001", "one second after the newest migration already there"
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    chain_order = chain.path_to(chain.script_directory(), chain.head(chain.script_directory()))
    assert [p.name[15:] for p in files] == [f"ghostsync_{Path(rev.path).stem}.sql" for rev in chain_order]
    before = {p.name: p.read_bytes() for p in migrations.iterdir()}
    extras = {p: p.read_bytes() for p in written[-2:]}
    # a week later: nothing new to write, every file kept as it was
    again = export_supabase(migrations, now=T0 + timedelta(days=7))
    assert [p.name for p in again] == ["verify-trigger.sql", "ghostsync.test.sql"]
    assert {p.name: p.read_bytes() for p in migrations.iterdir()} == before
    assert {p: p.read_bytes() for p in written[-2:]} == extras
    # a revision new since then (here: its file taken away) gets the moment of this export
    newest = files[-1]
    newest.unlink()
    later = export_supabase(migrations, now=T0 + timedelta(days=7))
    assert [p.name[15:] for p in later[:-2]] == [newest.name[15:]]
    assert later[0].name[:14] == (T0 + timedelta(days=7)).strftime("%Y%m%d%H%M%S")
    assert later[0].read_bytes() == before[newest.name]
    # a hole in the middle is refused, not filled with a newer timestamp
    files[1].unlink()
    with pytest.raises(Exception, match="restore it"):
        export_supabase(migrations, now=T0 + timedelta(days=8))


def test_db_push_takes_the_files_after_the_teams_newer_migration(db, tmp_path):
    migrations = tmp_path / "supabase" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / APP_NEWER).write_text("create table public.avatars (id int);\n")
    first = supabase_cli.push(db.url(), migrations)
    assert first.ok and history(db) == [(APP_NEWER[:14], "app_add_avatars")]
    # the old export stamped files with each revision's Create Date (2026-11-24/25): refused
    (migrations / "20261124000001_ghostsync_0001_base_tables.sql").write_text("select 1;\n")
    refused = supabase_cli.push(db.url(), migrations)
    assert refused.refused and supabase_cli.ERR_MISSING_REMOTE in refused.refused
    (migrations / "20261124000001_ghostsync_0001_base_tables.sql").unlink()
    export_supabase(migrations, now=T0)
    result = pushed(db, migrations)
    assert result.files[0].migration.name == "ghostsync_0001_base_tables"
    assert len(history(db)) == 1 + len(REVISIONS) and status_of(db).healthy


# -- the folder applied CLI-style ends as the online upgrade --------------------------------------------

def test_cli_push_ends_like_online_upgrade(db, tmp_path):
    seed_app_with_profiles(db, 3)
    seed_ghosts(db)
    migrations = folder(tmp_path)
    with clone(db) as online:
        online.upgrade()
        result = pushed(db, migrations)
        reports = {3: ["NOTICE (00000): ghostsync: backfill_ghost_users repaired 5 ghost user(s) (audit row 1)"],
                   9: ["NOTICE (00000): ghostsync: resync_profiles rewrote 0 stale profile(s) (audit row 2)"]}
        assert [str(n) for n in result.notices] == [
            line for n in range(1, len(REVISIONS) + 1)
            for line in [*reports.get(n, []), f"NOTICE (00000): ghostsync: upgraded to {REVISIONS[n - 1]}"]]
        assert state(db) == state(online)
    assert ghosts(db) == 0
    assert status_of(db).healthy
    with db.auth() as auth:
        uid = auth.signup(email="after.push@example.com")
    assert db.value("SELECT email FROM public.users WHERE id = %s", (str(uid),)) == "after.push@example.com"


def test_db_reset_on_a_fresh_project_creates_the_version_table(db, tmp_path):
    migrations = folder(tmp_path)
    with clone(db) as online:
        online.upgrade()
        result = supabase_cli.reset(db.url(), migrations)  # every file, no history compared
        assert result.ok and not result.warnings and len(result.files) == len(REVISIONS), result.text
        assert state(db) == state(online)
        assert db.sql("SELECT version_num FROM public.alembic_version") == [(HEAD,)]


def test_version_table_of_a_host_project_is_shared(db, tmp_path):
    """Alembic's table exists already (the app's own chain): the file adds ghostsync's row beside the app's."""
    db.sql("CREATE TABLE public.alembic_version (version_num varchar(32) NOT NULL, "
           "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)); "
           "INSERT INTO public.alembic_version VALUES ('app_0042')", user="postgres")
    pushed(db, folder(tmp_path))
    assert db.sql("SELECT version_num FROM public.alembic_version ORDER BY 1") == [("app_0042",), (HEAD,)]


# -- applied again, or on an Alembic install: nothing changes ---------------------------------------------

def test_each_file_changes_nothing_when_applied_again(db, tmp_path):
    seed_ghosts(db)
    migrations = folder(tmp_path)
    pushed(db, migrations)
    before = state(db, with_times=True)
    db.sql("DELETE FROM supabase_migrations.schema_migrations")  # as `migration repair --status reverted`
    again = pushed(db, migrations)
    assert len(again.files) == len(REVISIONS)
    assert all("is already applied: this migration changes nothing" in str(f.notices) for f in again.files)
    assert state(db, with_times=True) == before


def test_files_change_nothing_on_a_database_alembic_installed(db, tmp_path):
    seed_ghosts(db)
    db.upgrade()
    before = state(db, with_times=True)
    result = pushed(db, folder(tmp_path))
    assert len(result.files) == len(REVISIONS) and len(history(db)) == len(REVISIONS)
    assert state(db, with_times=True) == before
    # and an older revision's file on a database that went on past it puts nothing older back
    db.sql("DELETE FROM supabase_migrations.schema_migrations WHERE name LIKE '%0006%'")
    pushed(db, folder(tmp_path, "again"), include_all=True)
    assert state(db, with_times=True) == before


def test_files_continue_an_install_alembic_began(db, tmp_path):
    seed_ghosts(db)
    db.upgrade("ghostsync_0004")
    migrations = folder(tmp_path)
    with clone(db) as online:
        online.upgrade()
        result = pushed(db, migrations)
        assert [("upgraded to" in str(f.notices)) for f in result.files] == [False] * 4 + [True] * (len(REVISIONS) - 4)
        assert state(db) == state(online)


def test_a_file_out_of_order_fails_and_changes_nothing(db, tmp_path):
    migrations = folder(tmp_path)
    partial = only(migrations, lambda n: "0001" in n or "0004" in n, tmp_path / "partial")
    result = supabase_cli.push(db.url(), partial)
    assert [f.ok for f in result.files] == [True, False]
    assert "this database is at ghostsync_0001, but this migration upgrades from ghostsync_0003" \
        in result.files[1].error.message
    assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0001"
    assert db.value("SELECT to_regclass('ghostsync.sync_failures')") is None


# -- a file that fails leaves nothing behind --------------------------------------------------------------

def test_a_failing_file_leaves_nothing_behind(db, tmp_path):
    migrations = folder(tmp_path)
    pushed(db, only(migrations, lambda n: "0001" in n, tmp_path / "first"))
    before = state(db, with_times=True)
    # the app has a function of ghostsync's name: the 0002 file refuses it, after its guard ran
    db.sql("CREATE FUNCTION ghostsync.handle_new_user() RETURNS trigger LANGUAGE plpgsql AS "
           "$$ BEGIN RETURN NEW; END $$", user="supabase_admin")
    result = supabase_cli.push(db.url(), migrations)
    failed = result.failed
    assert failed is not None and failed.migration.name == "ghostsync_0002_sync_trigger"
    assert failed.error.message.startswith("ghostsync: function ghostsync.handle_new_user() exists and was not "
                                           "created by ghostsync")
    assert len(result.files) == 1, "the push stops at the failing file (0001 was pushed before)"
    assert history(db) == [(p.name[:14], p.name[15:-4]) for p in sorted(migrations.iterdir())[:1]]
    after = state(db, with_times=True)
    after["functions"] = [f for f in after["functions"] if f[0] != "ghostsync.handle_new_user()"]
    assert after == before


def test_a_failing_first_file_leaves_not_even_the_version_table(db, tmp_path):
    db.sql("CREATE TABLE public.users (id uuid PRIMARY KEY, email varchar(40), email_verified boolean NOT NULL "
           "DEFAULT false, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL "
           "DEFAULT now())", user="postgres")
    result = supabase_cli.push(db.url(), folder(tmp_path))
    assert result.failed and "existing table public.users cannot be adopted" in result.failed.error.message
    for relation in ("public.alembic_version", "ghostsync.objects", "public.cleanup_audit_log"):
        assert db.value("SELECT to_regclass(%s)", (relation,)) is None, relation
    assert db.value("SELECT to_regnamespace('ghostsync')") is None
    assert history(db) == []


# -- busy locks: retried within the same lock budget as online ---------------------------------------------

def _signups_while(db: SupabaseDatabase, stop: threading.Event, latencies: list[float]) -> threading.Thread:
    def run() -> None:
        with db.auth() as auth:
            for n in range(5000):
                if stop.is_set():
                    return
                began = time.monotonic()
                auth.signup(email=f"busy{n}.{uuid.uuid4().hex[:6]}@example.com")
                latencies.append(time.monotonic() - began)
                time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _hold_auth_users(db: SupabaseDatabase):
    """A long transaction of the auth service: it updated a row of auth.users and has not committed."""
    conn = psycopg2.connect(db.url("supabase_auth_admin"))
    with conn.cursor() as cur:
        cur.execute("UPDATE auth.users SET updated_at = now() WHERE id = (SELECT id FROM auth.users LIMIT 1)")
    return conn


def test_busy_locks_are_retried_within_the_lock_budget(db, tmp_path):
    seed_ghosts(db)
    budget = 0.3
    migrations = folder(tmp_path, x={"lock_timeout": "300ms", "lock_retries": "10", "lock_backoff": "100ms"})
    pushed(db, only(migrations, lambda n: "0001" in n, tmp_path / "first"))
    assert "greatest(10, 300 / 1)" in next(migrations.glob("*0002*")).read_text()
    blocker = _hold_auth_users(db)
    release = threading.Timer(1.5, blocker.rollback)
    stop, latencies = threading.Event(), []
    signups = _signups_while(db, stop, latencies)
    time.sleep(0.3)
    began = time.monotonic()
    release.start()
    try:
        result = supabase_cli.push(db.url(), migrations)
        took = time.monotonic() - began
    finally:
        stop.set()
        signups.join(timeout=30)
        release.join()
        blocker.close()
    assert result.ok and not result.warnings, result.text
    assert took >= 1.4, "the file waited for the long transaction, attempt after attempt"
    assert len(latencies) > 20
    assert max(latencies) < budget + 0.5, f"a signup waited {max(latencies):.2f} s behind the file's lock request"
    assert ghosts(db) == 0


def test_a_lock_that_never_frees_fails_the_file_cleanly(db, tmp_path):
    seed_ghosts(db)
    migrations = folder(tmp_path, x={"lock_timeout": "100ms", "lock_retries": "2", "lock_backoff": "100ms"})
    pushed(db, only(migrations, lambda n: "0001" in n, tmp_path / "first"))
    before = state(db, with_times=True)
    blocker = _hold_auth_users(db)
    try:
        began = time.monotonic()
        result = supabase_cli.push(db.url(), migrations)
        took = time.monotonic() - began
    finally:
        blocker.rollback()
        blocker.close()
    failed = result.failed
    assert failed is not None and failed.migration.name == "ghostsync_0002_sync_trigger"
    assert failed.error.message.startswith("ghostsync: gave up on create trigger(s) ghostsync_on_auth_user_created "
                                           "on auth.users: its locks were not free within 100 ms in 3 attempts")
    assert took < 10
    assert state(db, with_times=True) == before
    assert len(history(db)) == 1


# -- the backfill inside the CLI's one transaction ----------------------------------------------------------

def test_backfill_file_stops_at_its_limit_and_the_cli_finishes(db, tmp_path):
    seed_bulk_ghosts(db, 3000)
    migrations = folder(tmp_path, backfill_limit=1000, x={"batch_size": "400"})
    result = pushed(db, migrations)
    [backfill] = [f for f in result.files if "0003" in f.migration.name]
    assert [str(n) for n in backfill.notices] == [
        "NOTICE (00000): ghostsync: backfill_ghost_users stopped in a Supabase CLI migration after 1200 row(s), "
        "at its limit of 1000 for one transaction: run `ghostsync backfill` (batches of short transactions; it "
        "resumes where this stopped), then check with verify-trigger.sql",
        "NOTICE (00000): ghostsync: upgraded to ghostsync_0003"]
    assert ghosts(db) == 1800
    run = db.sql("SELECT status, records_affected, details FROM public.cleanup_audit_log "
                 "WHERE job_name = 'backfill_ghost_users'")
    assert [(status, affected) for status, affected, _ in run] == [("interrupted", 1200)]
    assert "ghostsync backfill" in run[0][2]["error"] and run[0][2]["last_id"]
    found = status_of(db)
    assert {p.code for p in found.problems} == {"ghosts"}
    assert "job_interrupted" in {w.code for w in found.warnings}
    proc = subprocess.run([sys.executable, "-m", "ghostsync", "backfill", "--batch-size", "500"],
                          env={"PATH": "/usr/bin:/bin", "DATABASE_URL": db.url()}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "resuming after" in proc.stderr
    assert ghosts(db) == 0 and status_of(db).healthy


def test_backfill_under_the_limit_repairs_everything_in_the_file(db, tmp_path):
    seed_bulk_ghosts(db, 2500)
    result = pushed(db, folder(tmp_path, backfill_limit=2500, x={"batch_size": "1000"}))
    assert ghosts(db) == 0
    assert db.sql("SELECT status, records_affected FROM public.cleanup_audit_log ORDER BY id") == [
        ("succeeded", 2500), ("succeeded", 0)]
    assert all("stopped" not in str(f.notices) for f in result.files)


# -- rollback as a new migration -----------------------------------------------------------------------------

def test_rollback_is_a_new_migration_that_keeps_every_profile(db, tmp_path):
    seed_app_with_profiles(db, 2)
    seed_ghosts(db)
    migrations = folder(tmp_path)
    pushed(db, migrations)
    profiles = db.sql("SELECT * FROM public.users ORDER BY id")
    with clone(db) as online:
        [back] = export_supabase(migrations, rollback_to="ghostsync_0006", now=T0 + timedelta(days=1))
        assert back.name == "20261126093000_ghostsync_rollback_to_ghostsync_0006.sql"
        result = pushed(db, migrations)
        assert [f.migration.path for f in result.files] == [back]
        online.downgrade("ghostsync_0006")
        assert state(db) == state(online)
        found = status_of(db)
        assert found.healthy and "behind_head" in [w.code for w in found.warnings]
        # up again: a new forward migration, pushed as any other
        [forward, *_] = export_supabase(migrations, now=T0 + timedelta(days=2))
        up = pushed(db, migrations)
        assert [f.migration.path for f in up.files] == [forward]
        online.upgrade()
        assert state(db) == state(online)
    [out] = export_supabase(migrations, rollback_to="base", now=T0 + timedelta(days=3))
    pushed(db, migrations)
    assert db.sql("SELECT * FROM public.users ORDER BY id") == profiles
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                    "AND NOT tgisinternal") == 0
    assert db.value("SELECT count(*) FROM pg_proc WHERE pronamespace = 'ghostsync'::regnamespace") == 0
    assert db.sql("SELECT version_num FROM public.alembic_version") == []
    # applied again without its history row: nothing to do
    db.sql("DELETE FROM supabase_migrations.schema_migrations WHERE version = %s", (out.name[:14],))
    again = pushed(db, migrations)
    assert "changes nothing" in str(again.files[0].notices)


def test_after_a_rollback_export_writes_the_way_forward_that_every_replay_takes(db, tmp_path):
    """The old road back up (`migration repair --status reverted`, `db push --include-all`) brought
    production to head while a replay of the same folder ended at the rollback's revision."""
    seed_app_with_profiles(db, 2)
    seed_ghosts(db)
    migrations = folder(tmp_path)
    with clone(db) as replay:
        pushed(db, migrations)
        [back] = export_supabase(migrations, rollback_to="ghostsync_0006", now=T0 + timedelta(days=1))
        pushed(db, migrations)
        written = export_supabase(migrations, now=T0 + timedelta(days=2))
        forward = [p for p in written if p.parent == migrations]
        assert [p.name for p in forward] == [f"20261127093000_ghostsync_forward_to_{HEAD}.sql"]
        up = pushed(db, migrations)  # the newest file: no --include-all
        assert [f.migration.path for f in up.files] == forward
        assert [str(n) for n in up.notices] == [
            "NOTICE (00000): ghostsync: resync_profiles rewrote 0 stale profile(s) (audit row 3)",
            f"NOTICE (00000): ghostsync: upgraded from ghostsync_0006 to {HEAD}"]
        assert db.sql("SELECT version_num FROM public.alembic_version") == [(HEAD,)]
        # the folder replayed from scratch (db reset, a preview branch, a new project) ends where production is
        result = supabase_cli.reset(replay.url(), migrations)
        assert result.ok and not result.warnings and len(result.files) == len(REVISIONS) + 2, result.text
        assert state(replay) == state(db)
        assert status_of(replay).healthy and status_of(replay).at_head
    # exported again: nothing new, every migration the same bytes
    before = {p.name: p.read_bytes() for p in migrations.iterdir()}
    again = export_supabase(migrations, now=T0 + timedelta(days=3))
    assert all(p.parent != migrations for p in again)
    assert {p.name: p.read_bytes() for p in migrations.iterdir()} == before
    assert back.exists()


def test_forward_file_changes_nothing_where_ghostsync_is_at_its_target(db, tmp_path):
    seed_ghosts(db)
    db.upgrade()
    migrations = folder(tmp_path)
    export_supabase(migrations, rollback_to="ghostsync_0004", now=T0 + timedelta(days=1))
    [forward, *_] = export_supabase(migrations, now=T0 + timedelta(days=2))
    before = state(db, with_times=True)
    result = pushed(db, only(migrations, lambda n: n == forward.name, tmp_path / "forward"))
    assert [str(n) for n in result.notices] == [
        f"NOTICE (00000): ghostsync: {HEAD} is installed, so {HEAD} is already reached: this "
        "migration changes nothing"]
    assert state(db, with_times=True) == before


def test_forward_from_base_backfills_the_ghosts_made_meanwhile_and_says_how_many(db, tmp_path):
    migrations = folder(tmp_path)
    pushed(db, migrations)
    export_supabase(migrations, rollback_to="base", now=T0 + timedelta(days=1))
    pushed(db, migrations)
    seed_ghosts(db, "while_out")  # no trigger: five ghosts
    assert ghosts(db) == 5
    [forward, *_] = export_supabase(migrations, now=T0 + timedelta(days=2))
    assert forward.name.endswith(f"_ghostsync_forward_to_{HEAD}.sql")
    up = pushed(db, migrations)
    # (the tables stayed: PostgreSQL's own "already exists, skipping" notices come too)
    assert [str(n) for n in up.notices if "ghostsync:" in n.message] == [
        "NOTICE (00000): ghostsync: backfill_ghost_users repaired 5 ghost user(s) (audit row 3)",
        "NOTICE (00000): ghostsync: resync_profiles rewrote 0 stale profile(s) (audit row 4)",
        f"NOTICE (00000): ghostsync: upgraded from no ghostsync revision to {HEAD}"]
    assert ghosts(db) == 0 and status_of(db).healthy


def test_replayed_follows_rollbacks_and_forwards(tmp_path):
    from ghostsync.export import replayed

    script = chain.script_directory()
    migrations = folder(tmp_path)
    assert replayed(migrations, script) == HEAD
    export_supabase(migrations, rollback_to="ghostsync_0006", now=T0 + timedelta(days=1))
    assert replayed(migrations, script) == "ghostsync_0006"
    export_supabase(migrations, rollback_to="ghostsync_0007", now=T0 + timedelta(days=2))  # not below 0006
    assert replayed(migrations, script) == "ghostsync_0006"
    export_supabase(migrations, now=T0 + timedelta(days=3))
    assert replayed(migrations, script) == HEAD
    export_supabase(migrations, rollback_to="ghostsync@base", now=T0 + timedelta(days=4))
    assert replayed(migrations, script) is None
    written = export_supabase(migrations, now=T0 + timedelta(days=5))
    assert [p.name[15:] for p in written[:-2]] == [f"ghostsync_forward_to_{HEAD}.sql"]
    assert replayed(migrations, script) == HEAD


def test_a_new_revision_after_a_rollback_comes_after_the_forward_file(tmp_path):
    """A newer ghostsync (here: the head's file taken away) after a rollback: the forward file takes the
    folder back to what its files reached, then the new revision's own file follows it."""
    from ghostsync.export import replayed

    script = chain.script_directory()
    migrations = folder(tmp_path)
    newest = sorted(migrations.glob(f"*_{HEAD}_*.sql"))[-1]
    newest.unlink()
    export_supabase(migrations, rollback_to="ghostsync_0006", now=T0 + timedelta(days=1))
    written = export_supabase(migrations, now=T0 + timedelta(days=2))
    assert [p.name for p in written[:-2]] == [f"20261127093000_ghostsync_forward_to_{PREVIOUS}.sql",
                                              "20261127093001" + newest.name[14:]]
    assert replayed(migrations, script) == HEAD


def test_export_command_line(tmp_path):
    target = tmp_path / "supabase" / "migrations"
    proc = subprocess.run([sys.executable, "-m", "ghostsync", "export-supabase", str(target)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert len(lines) == len(REVISIONS) + 2 and lines[-2].endswith("verify-trigger.sql")
    assert sorted(p.name for p in target.iterdir()) == [Path(line).name for line in lines[:-2]]
