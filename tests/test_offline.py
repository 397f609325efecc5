"""`alembic upgrade head --sql`, applied with psql as postgres, gives what the online upgrade gives."""

from __future__ import annotations

import subprocess
import sys

from ghostsync.testing.fixtures import supabase_database
from tests.catalog import fingerprint
from tests.paths import REPO
from tests.seeding import audit_rows, duplicate_count, ghost_count, profiles, seed_app_with_profiles, seed_ghosts


def offline_sql(*x_args: str) -> str:
    x = [arg for value in x_args for arg in ("-x", value)]
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), *x, "upgrade", "head", "--sql"],
        cwd=REPO, capture_output=True, text=True, check=True,
        # offline needs no database; an unreachable URL proves it
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"},
    )
    return proc.stdout


def test_offline_sql_equals_online_upgrade(pg):
    script = offline_sql("batch_size=2")
    assert "BEGIN;" in script and "COMMIT;" in script
    with supabase_database(pg) as online, supabase_database(pg) as offline:
        for database in (online, offline):
            seed_app_with_profiles(database, 2)
            seed_ghosts(database)
        online.upgrade()
        proc = offline.psql(script)
        assert proc.returncode == 0, proc.stderr
        assert ghost_count(offline) == 0
        assert duplicate_count(offline) == 0
        assert len(profiles(offline)) == len(profiles(online)) == 7
        assert fingerprint(offline) == fingerprint(online)
        [(status, affected, finished, details)] = audit_rows(offline)
        assert (status, affected, finished) == ("succeeded", 5, True)
        assert details["mode"] == "offline" and details["batches"] == 4
        with offline.auth() as auth:
            uid = auth.signup(email="after.offline@example.com")
        assert profiles(offline)[str(uid)][:2] == ("after.offline@example.com", False)


def test_offline_downgrade_sql_keeps_data(pg):
    script = offline_sql()
    with supabase_database(pg) as db:
        seed_ghosts(db)
        assert db.psql(script).returncode == 0
        kept = profiles(db)
        down = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "downgrade",
             "head:base", "--sql"],
            cwd=REPO, capture_output=True, text=True, check=True,
            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        ).stdout
        proc = db.psql(down)
        assert proc.returncode == 0, proc.stderr
        assert profiles(db) == kept
        assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                        "AND NOT tgisinternal") == 0
