"""The whole chain, up and down, on both role vintages of Supabase, and on today's hosted platform.

- "membership": older projects, ``postgres`` a member of ``supabase_auth_admin`` (the owner of auth.users);
- "current": today's roles without supautils: CREATE TRIGGER (constraint triggers too) and CREATE OR REPLACE
  TRIGGER work through the TRIGGER privilege, DROP TRIGGER is refused ("must be owner of relation users"), so
  the upgrade works as postgres and a downgrade that drops a trigger does not
  (tests/test_trigger_privileges.py measures each);
- "hosted": today's roles with the model of supautils, which lets ``postgres`` drop the trigger while
  locking auth.users, then auth.audit_log_entries, auth.identities, auth.refresh_tokens, auth.sessions.
"""

from __future__ import annotations

import pytest

from ghostsync.testing.fixtures import supabase_database
from ghostsync.testing.supabase import ROLE_SETUPS
from tests.seeding import (
    GHOSTSYNC_TRIGGERS,
    ghost_count,
    ghostsync_cli,
    head_revision,
    profiles,
    seed_ghosts,
    triggers_on_auth_users,
)


def ghostsync_state(db) -> tuple:
    return (
        db.value("SELECT version_num FROM public.alembic_version"),
        sorted(triggers_on_auth_users(db)),
        db.sql("SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'ghostsync'::regnamespace "
               "ORDER BY 1"),
        db.sql("SELECT kind, name FROM ghostsync.objects ORDER BY 1, 2"),
    )


@pytest.mark.parametrize("roles", ROLE_SETUPS)
def test_the_whole_chain_up_and_down(pg, supabase_servers, roles):
    with supabase_database(supabase_servers.get(pg.major, roles)) as db:
        seed_ghosts(db)
        # the whole chain as postgres: ghostsync_0010 creates its constraint triggers under names of their own
        # and replaces 0008's in place, dropping no trigger on auth.users (TRIGGER privilege enough)
        up = db.alembic_cli("upgrade", "head")
        assert up.returncode == 0, up.stderr
        assert ghost_count(db) == 0
        assert sorted(triggers_on_auth_users(db)) == sorted(GHOSTSYNC_TRIGGERS)
        with db.auth() as auth:
            uid = auth.signup(email=f"{roles}@example.com", confirmed=True)
        assert profiles(db)[str(uid)][:2] == (f"{roles}@example.com", True)
        assert ghostsync_cli(db, "status").returncode == 0
        kept = profiles(db)
        before = ghostsync_state(db)

        if roles == "current":
            # a plain alembic downgrade (no preflight): ghostsync_0011's goes; ghostsync_0010's must drop its
            # constraint triggers, which only the owner (or supautils) may, and stops with one line, whole
            down = db.alembic_cli("downgrade", "ghostsync_0009")
            assert down.returncode != 0
            out = down.stdout + down.stderr
            assert "Traceback" not in out
            [failed] = [line for line in out.splitlines() if line.startswith("FAILED: ")]
            assert ("ghostsync: cannot drop trigger zz_ghostsync_on_auth_user_created on auth.users: role postgres "
                    "is not its owner (supabase_auth_admin)") in failed
            assert "supabase_admin" in failed and "nothing of this revision was applied" in failed
            assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0010"
            assert sorted(triggers_on_auth_users(db)) == sorted(GHOSTSYNC_TRIGGERS)
            assert db.alembic_cli("upgrade", "head").returncode == 0
            assert ghostsync_state(db) == before

        down = ghostsync_cli(db, "migrate", "downgrade", "ghostsync@base")
        out = down.stdout + down.stderr
        assert "Traceback" not in out
        if roles == "current":
            # refused by ghostsync migrate's preflight, before Alembic runs: one line
            assert down.returncode == 2
            [failed] = out.strip().splitlines()
            assert ("cannot drop ghostsync's triggers on auth.users: role postgres is not their owner "
                    "(supabase_auth_admin)") in failed
            assert "supautils" in failed and "supabase_admin" in failed
            assert "nothing was downgraded" in failed
            assert ghostsync_state(db) == before, "nothing half-done"
            # what the line says to run instead works
            down = ghostsync_cli(db, "migrate", "downgrade", "ghostsync@base", url=db.url("supabase_admin"))
        assert down.returncode == 0, down.stdout + down.stderr
        assert triggers_on_auth_users(db) == {}
        assert db.value("SELECT count(*) FROM pg_proc WHERE pronamespace = 'ghostsync'::regnamespace") == 0
        assert profiles(db) == kept, "no profile deleted"

        again = db.alembic_cli("upgrade", "head")
        assert again.returncode == 0, again.stderr
        assert db.value("SELECT version_num FROM public.alembic_version") == head_revision()
        assert ghostsync_cli(db, "status").returncode == 0


def test_hosted_drop_takes_the_auth_tables_supautils_locks_within_the_budget(pg, supabase_servers):
    """A session holding auth.sessions makes the drop wait (and give up within the budget) while auth.users is
    already locked: the budget counts every table the drop really locks."""
    import psycopg2

    with supabase_database(supabase_servers.get(pg.major, "hosted")) as db:
        db.upgrade()
        holder = psycopg2.connect(db.url("supabase_auth_admin"))
        try:
            with holder.cursor() as cur:
                cur.execute("BEGIN; LOCK TABLE auth.sessions IN ROW EXCLUSIVE MODE")
            down = ghostsync_cli(db, "migrate", "-x", "lock_retries=1", "-x", "lock_timeout=200ms",
                                 "downgrade", "ghostsync_0007", timeout=60)
        finally:
            holder.rollback()
            holder.close()
        out = down.stdout + down.stderr
        assert down.returncode != 0
        # the first revision down that drops a trigger on auth.users (ghostsync_0010's) rolled back whole
        assert "gave up on drop trigger(s) zz_ghostsync_on_auth_user_created, zz_ghostsync_on_auth_user_updated " \
            "on auth.users" in out, out
        assert "within 200 ms in 2 attempts" in out
        assert db.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0010"
        assert "ghostsync_on_auth_users_deleted" in triggers_on_auth_users(db)
        down = ghostsync_cli(db, "migrate", "downgrade", "ghostsync_0007")
        assert down.returncode == 0, down.stderr
