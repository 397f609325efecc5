"""ghostsync under the env.py a host project really has (issue 19, sections 1 and 1b).

Every host project here is made the way a team makes one: ``alembic.command.init`` (the
``generic`` template, or ``async`` for an asyncio application), then the README's two changes to
the ini it writes: ``version_locations`` naming the host's folder and ``ghostsync:migrations/versions``,
and ``path_separator = space`` in place of the line ``alembic init`` writes. The env.py is the
template's own, untouched unless a test says what it changes; ``sqlalchemy.url`` in the ini names
the throwaway database, in the URL form the test is about. ``alembic`` runs as a deploy pipeline
runs it: its command line, in a process of its own.

- Stock env.py (no ``transaction_per_migration``): ghostsync refuses before its first statement,
  in one line naming the setting, online and with ``--sql``; nothing is applied, and signups are
  not kept waiting behind an auth transaction held open meanwhile (the stall of issue 19: 41.6 s).
- An env.py that wraps the run in one outer transaction (``engine.begin()``, as mlflow does):
  refused likewise, before the first statement of the first ghostsync revision that would share
  that transaction with an earlier one; nothing is applied.
- psycopg 3 (``postgresql+psycopg://``): a busy lock is retried, and the upgrade goes through once
  the lock is free.
- asyncpg (Alembic's ``async`` template, ``run_sync``): the whole chain up and down to base.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from alembic import command
from alembic.config import Config

from ghostsync import chain
from ghostsync.migrations import own_transaction, statements
from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.fixtures import SupabaseDatabase
from tests.loadcheck import LockWaitSampler, hold_auth_users_lock, reap, released_when_blocked
from tests.seeding import ghost_count, profiles, seed_ghosts

HEAD = chain.head(chain.script_directory())
SETTING = "transaction_per_migration=True"
# The lock budget's promise (default lock_timeout 400 ms), with the tolerance test_lock_budget.py states.
TARGET_S = 0.5

# The README's version_locations: the host's own revisions, then ghostsync's chain in the installed package.
VERSION_LOCATIONS = "%(here)s/migrations/versions ghostsync:migrations/versions"

HOST_REVISION = '''\
"""products: the host's own history, a branch of its own"""
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = ("app",)
depends_on = None


def upgrade():
    op.execute("CREATE TABLE public.products (sku text PRIMARY KEY)")


def downgrade():
    op.execute("DROP TABLE public.products")
'''


def host_project(root: Path, url: str, *, template: str = "generic", with_revision: bool = False) -> Path:
    """A host project as ``alembic init`` makes it, with the README's two changes to its ini and
    ``sqlalchemy.url`` naming ``url``; returns its alembic.ini."""
    root.mkdir(parents=True, exist_ok=True)
    ini = root / "alembic.ini"
    command.init(Config(str(ini)), str(root / "migrations"), template=template)
    text = ini.read_text()
    for pattern, line in (
        (r"^path_separator = .*$", "path_separator = space"),
        (r"^# version_locations = .*$", f"version_locations = {VERSION_LOCATIONS}"),
        (r"^sqlalchemy\.url = .*$", "sqlalchemy.url = " + url.replace("%", "%%")),
    ):
        text, found = re.subn(pattern, line, text, count=1, flags=re.MULTILINE)
        assert found == 1, f"alembic init's ini has no line {pattern}"
    ini.write_text(text)
    if with_revision:
        (root / "migrations" / "versions" / "host_0001_products.py").write_text(HOST_REVISION)
    return ini


def edit_env(ini: Path, old: str, new: str) -> None:
    env = ini.parent / "migrations" / "env.py"
    text = env.read_text()
    assert text.count(old) == 1, f"the template's env.py has no {old!r}"
    env.write_text(text.replace(old, new))


def per_migration(ini: Path) -> None:
    """The README's one change to a template's env.py: a transaction per revision, online and offline."""
    env = ini.parent / "migrations" / "env.py"
    text = env.read_text()
    text, found = re.subn(r"target_metadata=target_metadata,?", f"target_metadata=target_metadata, {SETTING},", text)
    assert found == 2, "the template's env.py configures the context twice (online and offline)"
    env.write_text(text)


def alembic_argv(ini: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "alembic", "-c", str(ini), *args]


def alembic(ini: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The host's ``alembic`` command line, run as its deploy pipeline runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTSYNC_") and k != "DATABASE_URL"}
    return subprocess.run(alembic_argv(ini, *args), cwd=ini.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)


def refusal(proc: subprocess.CompletedProcess[str] | tuple[int, str, str]) -> str:
    """The one line a refused command ends with: Alembic's CLI prints it as ``FAILED: ...`` (stdout),
    and its logging, which the ini of ``alembic init`` configures, says the same line as an ERROR."""
    rc, out, err = (proc.returncode, proc.stdout, proc.stderr) if isinstance(proc, subprocess.CompletedProcess) \
        else proc
    assert rc != 0 and "Traceback" not in out + err, out + err
    failed = [line for line in out.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1, out + err
    message = failed[0].removeprefix("FAILED:").strip()
    others = [line for line in err.splitlines() if not line.startswith("INFO ")]
    assert others == [f"ERROR [alembic.util.messaging] {message}"], err
    return message


def versions(db: SupabaseDatabase) -> set[str]:
    if db.value("SELECT to_regclass('public.alembic_version')") is None:
        return set()
    return {row[0] for row in db.sql("SELECT version_num FROM public.alembic_version")}


def has_deleted_at(db: SupabaseDatabase) -> bool:
    return bool(db.value("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.users'::regclass "
                         "AND attname = 'deleted_at' AND NOT attisdropped"))


# -- 1. one transaction per revision, or none at all -------------------------------------------------

def test_stock_env_is_refused_before_anything_runs(db: SupabaseDatabase, tmp_path: Path) -> None:
    """Alembic's stock env.py runs ghostsync's chain and the host's own revision in one transaction:
    refused in one line naming the setting; neither the host's revision nor ghostsync's is applied
    (on main 0003's autocommit_block committed everything before it mid-run)."""
    ini = host_project(tmp_path / "host", db.url(scheme="postgresql+psycopg2"), with_revision=True)
    line = refusal(alembic(ini, "upgrade", "heads"))
    assert line.startswith("ghostsync: ") and SETTING in line and line == own_transaction.ONE_TRANSACTION
    assert versions(db) == set()
    assert db.value("SELECT to_regnamespace('ghostsync') IS NULL AND to_regclass('public.products') IS NULL")

    # With the setting, the same project installs the whole chain.
    per_migration(ini)
    proc = alembic(ini, "upgrade", "heads")
    assert proc.returncode == 0, proc.stderr
    assert versions(db) == {HEAD, "host_0001"}


def test_stock_env_offline_is_refused(tmp_path: Path) -> None:
    """``--sql`` with the stock env.py would put every revision between one BEGIN and COMMIT (the same
    stall under psql): refused alike. With the setting, each revision is a transaction of its own."""
    ini = host_project(tmp_path / "host", "postgresql+psycopg2://")
    proc = alembic(ini, "upgrade", "heads", "--sql")
    assert refusal(proc) == own_transaction.ONE_TRANSACTION
    assert "$ghostsync" not in proc.stdout, "no statement of ghostsync printed"

    per_migration(ini)
    proc = alembic(ini, "upgrade", "heads", "--sql")
    assert proc.returncode == 0, proc.stderr
    revisions = len(chain.branch_revisions(chain.script_directory()))
    assert len(re.findall(r"^BEGIN;$", proc.stdout, re.M)) == len(re.findall(r"^COMMIT;$", proc.stdout, re.M)) \
        == revisions


def test_an_outer_transaction_is_refused(db: SupabaseDatabase, tmp_path: Path) -> None:
    """An env.py that runs the migrations inside a transaction of its own (``engine.begin()``, as
    mlflow does): with transaction_per_migration set, Alembic still runs every revision in that one
    transaction. Refused before the first statement of the first ghostsync revision that would share
    it with an earlier one; the outer transaction rolls back, so nothing is applied."""
    db.upgrade("ghostsync_0004")
    ini = host_project(tmp_path / "host", db.url(scheme="postgresql+psycopg2"))
    per_migration(ini)
    edit_env(ini, "with connectable.connect() as connection:", "with connectable.begin() as connection:")
    line = refusal(alembic(ini, "upgrade", "heads"))
    assert line == own_transaction.OUTER_TRANSACTION and SETTING in line
    assert versions(db) == {"ghostsync_0004"} and not has_deleted_at(db)


def test_lock_budget_holds_with_the_stock_env(db: SupabaseDatabase, tmp_path: Path) -> None:
    """Issue 19's stall, reproduced as it was found: a database at ghostsync_0004, one auth transaction
    held open (4 s), ``alembic upgrade heads`` from a host project with the stock env.py, signups
    meanwhile. Refused in one line, nothing applied, and no signup waits longer than the lock budget
    promises (on main: 0005's lock on public.users stayed held into 0007, and signups waited seconds)."""
    db.upgrade("ghostsync_0004")
    ini = host_project(tmp_path / "host", db.url(scheme="postgresql+psycopg2"))
    holder = hold_auth_users_lock(db)
    release = threading.Timer(4.0, holder.rollback)
    signups: list[float] = []
    stop = threading.Event()

    def sign_up() -> None:
        with db.auth() as auth:
            for n in range(10_000):
                if stop.is_set() and n >= 3:
                    return
                began = time.monotonic()
                auth.signup(email=f"during-{n}@example.com")
                signups.append(time.monotonic() - began)

    with LockWaitSampler(db.url("supabase_admin"), max_s=120) as sampler:
        proc = subprocess.Popen(alembic_argv(ini, "upgrade", "heads"), cwd=ini.parent, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        release.start()
        signer = threading.Thread(target=sign_up, name="signups", daemon=True)
        signer.start()
        try:
            out, err = reap(proc, timeout=120)
        finally:
            stop.set()
            signer.join(timeout=60)
            release.cancel()
            holder.rollback()
            holder.close()
    waited = max((w.waited_s for w in sampler.waits_of(AUTH_ROLE)), default=0.0)
    assert len(signups) >= 3 and max(signups) < 2.0, signups  # wall clock, CPU included (main: 41.7 s)
    assert waited < TARGET_S, f"a signup waited {waited:.1f} s for a lock"
    assert refusal((proc.returncode, out, err)) == own_transaction.ONE_TRANSACTION
    assert versions(db) == {"ghostsync_0004"} and not has_deleted_at(db)


# -- 1b. every driver SQLAlchemy offers for PostgreSQL -------------------------------------------------

def test_psycopg3_retries_a_busy_lock(db: SupabaseDatabase, tmp_path: Path) -> None:
    """psycopg 3 (``postgresql+psycopg://``, the FastAPI template's form; SQLAlchemy 2.1 gives a bare
    ``postgresql://`` the same driver) names the SQLSTATE ``sqlstate``: a lock that is busy for less
    than the budget's retries is retried and the upgrade goes through (on main the first lock timeout
    failed it). The auth transaction is released from the test once the migration has been seen
    waiting twice, i.e. once its first attempt timed out and it tried again."""
    db.upgrade("ghostsync_0006")
    ini = host_project(tmp_path / "host", db.url(scheme="postgresql+psycopg"))
    per_migration(ini)
    holder = hold_auth_users_lock(db)
    with released_when_blocked(db, holder, waits=2, max_s=30) as release:
        proc = subprocess.Popen(alembic_argv(ini, "upgrade", "heads"), cwd=ini.parent, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        release()
        out, err = reap(proc, timeout=180)
    assert proc.returncode == 0, out + err
    attempts = [int(n) for n in re.findall(r"auth\.users[^:]*: locks taken on attempt (\d+)", err)]
    assert attempts and attempts[0] >= 2, err
    assert versions(db) == {HEAD}


def test_asyncpg_runs_the_whole_chain(db: SupabaseDatabase, tmp_path: Path) -> None:
    """Alembic's own ``async`` template (``run_sync``) on a ``postgresql+asyncpg://`` URL: asyncpg
    prepares every statement it sends and takes one command each, so the kit sends its steps one
    statement at a time. The whole chain upgrades (its backfill repairing the ghosts there are) and
    downgrades to base."""
    ghosts = seed_ghosts(db)
    ini = host_project(tmp_path / "host", db.url(scheme="postgresql+asyncpg"), template="async")
    per_migration(ini)
    proc = alembic(ini, "upgrade", "heads")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert versions(db) == {HEAD} and ghost_count(db) == 0 and set(map(str, ghosts.values())) <= set(profiles(db))
    proc = alembic(ini, "downgrade", "base")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert versions(db) == set()
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                    "AND tgname LIKE 'ghostsync%'") == 0

    # A check the SQL makes ends the command with its one line on asyncpg too (the server's message
    # reaches the kit through SQLAlchemy's adaptation of asyncpg's error).
    db.sql("CREATE FUNCTION ghostsync.handle_new_user() RETURNS trigger LANGUAGE plpgsql "
           "AS $$BEGIN RETURN NEW; END$$", user="postgres")
    line = refusal(alembic(ini, "upgrade", "heads"))
    assert line.startswith("ghostsync: function ghostsync.handle_new_user() exists and was not created by ghostsync")
    assert versions(db) == {"ghostsync_0001"}


def test_an_outer_transaction_never_commits_mid_run(db: SupabaseDatabase, tmp_path: Path) -> None:
    """The first revision of a run inside an env.py's outer transaction cannot be told from one in its
    own transaction; where it is a data job (0003), ``autocommit_block`` finds no transaction of
    Alembic's to commit: refused in one line, and nothing is committed (no audit row, no profile)."""
    seed_ghosts(db)
    db.upgrade("ghostsync_0002")
    ini = host_project(tmp_path / "host", db.url(scheme="postgresql+psycopg2"))
    per_migration(ini)
    edit_env(ini, "with connectable.connect() as connection:", "with connectable.begin() as connection:")
    line = refusal(alembic(ini, "upgrade", "heads"))
    assert line == own_transaction.OUTER_TRANSACTION
    assert versions(db) == {"ghostsync_0002"} and ghost_count(db) > 0
    assert db.value("SELECT count(*) FROM public.cleanup_audit_log") == 0


def test_statements_are_cut_where_the_server_cuts_them() -> None:
    """What the kit sends asyncpg one at a time: ``;`` ends a statement only outside quotes, dollar
    quotes, comments, parentheses and a BEGIN ATOMIC body."""
    sql = """SELECT 1; -- a comment; not a statement
/* a /* nested; */ comment; */ SELECT 'it''s; quoted';
SELECT E'\\\\'';' AS escaped; SELECT "odd;""name" FROM t;
DO $ghostsync$ BEGIN PERFORM 1; END $ghostsync$;
CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;
CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b);
SELECT $1, a$b;
-- only a comment here;
"""
    assert statements.split(sql) == [
        "SELECT 1",
        "-- a comment; not a statement\n/* a /* nested; */ comment; */ SELECT 'it''s; quoted'",
        "SELECT E'\\\\'';' AS escaped",
        'SELECT "odd;""name" FROM t',
        "DO $ghostsync$ BEGIN PERFORM 1; END $ghostsync$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END",
        "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)",
        "SELECT $1, a$b",
    ]


def test_database_url_reaches_an_async_env_with_its_driver(db: SupabaseDatabase, tmp_path: Path) -> None:
    """``ghostsync --database-url URL --alembic-config host.ini migrate`` hands URL to the host's env.py with
    the driver the ini names: an async env.py (``alembic init -t async``) keeps asyncpg, where psycopg2
    failed it ("the asyncio extension requires an async driver") before anything ran."""
    ini = host_project(tmp_path / "host", "postgresql+asyncpg://nobody@127.0.0.1:1/never_contacted",
                       template="async")
    per_migration(ini)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTSYNC_") and k != "DATABASE_URL"}
    proc = subprocess.run([sys.executable, "-m", "ghostsync", "--database-url", db.url(), "--alembic-config",
                           str(ini), "migrate", "upgrade", "heads"], cwd=ini.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert versions(db) == {HEAD}
