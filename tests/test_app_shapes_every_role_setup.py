"""Issue 18's app shapes on every role setup of Supabase ("membership", "current", "hosted").

The rest of the issue's tests run on the fixture's default setup (hosted). Here each app shape with its own
public.users is installed first, as ``postgres``, on each setup; then, as ``postgres`` too: signups at every
revision of the upgrade (``tests/test_upgrade_window.py``), the app's soft delete beside the delete sync, and
a hard delete under the app's own key. What the role setup changes (who may drop a trigger on auth.users)
must change none of it.
"""

from __future__ import annotations

import json

import psycopg2.errors
import pytest

from ghostsync.testing.fixtures import supabase_database
from ghostsync.testing.supabase import ROLE_SETUPS
from tests.seeding import failures, ghost_count, ghostsync_cli
from tests.test_deletes import APP_SOFT_DELETE_SQL
from tests.test_upgrade_window import REVISIONS, SHAPES, signup_at_each_revision


def app_values(db, uid) -> dict:
    return db.sql("SELECT to_jsonb(u) FROM public.users AS u WHERE id = %s", (str(uid),))[0][0]


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("roles", ROLE_SETUPS)
def test_an_app_shape_with_ghostsync_on_each_role_setup(pg, supabase_servers, roles, name):
    shape, app = SHAPES[name]
    with supabase_database(supabase_servers.get(pg.major, roles)) as db:
        db.sql(shape, user="postgres")
        accounts = signup_at_each_revision(db, REVISIONS)
        assert db.value("SELECT version_num FROM public.alembic_version") == REVISIONS[-1]
        assert ghost_count(db) == 0
        # chat's table has no email column: 0007's to 0009's static update sync fails there and is recorded
        assert {(op, state) for _id, op, state, *_ in failures(db)} == ({("UPDATE", "42703")} if name == "chat"
                                                                         else set())
        kept, gone = accounts[REVISIONS[-1]]
        for uid in (kept, gone):
            assert {c: app_values(db, uid)[c] for c in app} == app

        # the app's soft delete: its BEFORE DELETE trigger keeps the account; the profile stays the same row
        db.sql(APP_SOFT_DELETE_SQL, user="supabase_admin")
        with db.auth() as auth:
            auth.hard_delete(kept)
        assert db.value("SELECT deleted_at IS NOT NULL FROM auth.users WHERE id = %s", (kept,)) is True
        row = app_values(db, kept)
        assert {c: row[c] for c in app} == app
        if "deleted_at" in row:
            assert row["deleted_at"] is not None
        db.sql("DROP TRIGGER soft_delete_user ON auth.users", user="supabase_admin")

        # a hard delete: the app's key decides (chat's does not cascade: refused, as without ghostsync)
        with db.auth() as auth:
            if name == "chat":
                with pytest.raises(psycopg2.errors.ForeignKeyViolation):
                    auth.hard_delete(gone)
            else:
                auth.hard_delete(gone)
        remaining = db.value("SELECT count(*) FROM public.users WHERE id = %s", (gone,))
        assert remaining == (1 if name == "chat" else 0)

        proc = ghostsync_cli(db, "status", "--json")
        found = json.loads(proc.stdout)
        assert (proc.returncode, found["healthy"]) == (0, True), found["problems"]
