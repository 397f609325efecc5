"""alembic upgrade head on Supabase-like databases: empty, with ghosts, with the app's tables."""

from __future__ import annotations

import json

import pytest

from tests.seeding import (
    GHOSTSYNC_TRIGGERS,
    audit_rows,
    duplicate_count,
    ghost_count,
    ghostsync_cli,
    head_revision,
    profiles,
    seed_app_with_profiles,
    seed_ghosts,
    triggers_on_auth_users,
)

HEAD = head_revision()


def version(db) -> str:
    return db.value("SELECT version_num FROM public.alembic_version")


def test_upgrade_on_empty_auth_schema(db):
    db.upgrade()
    assert version(db) == HEAD
    assert db.value("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.users'::regclass") is True
    assert db.value("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'public.users'::regclass") == "postgres"
    # ghostsync_0011 took its own key away: its statement trigger deletes the profiles (ghostsync.delete_rules)
    assert db.value("SELECT count(*) FROM pg_constraint "
                    "WHERE conrelid = 'public.users'::regclass AND contype = 'f'") == 0
    assert triggers_on_auth_users(db) == dict.fromkeys(GHOSTSYNC_TRIGGERS, "O")
    [(status, affected, finished, details)] = audit_rows(db)
    assert (status, affected, finished) == ("succeeded", 0, True)
    assert details["mode"] == "online"
    registered = dict(db.sql("SELECT kind || ' ' || name, created FROM ghostsync.objects"))
    assert registered == {
        "schema ghostsync": True, "table public.users": True, "table public.cleanup_audit_log": True,
        "table ghostsync.sync_failures": True, "column public.users.deleted_at": True,
        **{f"function ghostsync.{f}()": True for f in ("handle_new_user", "handle_user_updated",
                                                        "handle_user_deleted", "handle_users_deleted")},
        "function ghostsync.write_profile(uuid,boolean)": True,
        **{f"trigger {t} ON auth.users": True for t in GHOSTSYNC_TRIGGERS},
    }


def test_upgrade_repairs_ghosts_of_every_kind(db):
    ghosts = seed_ghosts(db)
    assert db.value("SELECT to_regclass('public.users')") is None
    db.upgrade()
    assert ghost_count(db) == 0
    got = profiles(db)
    assert got[str(ghosts["email_confirmed"])][:2] == ("ghost.confirmed@example.com", True)
    assert got[str(ghosts["email_unconfirmed"])][:2] == ("ghost.unconfirmed@example.com", False)
    assert got[str(ghosts["phone"])][:2] == (None, False)
    assert got[str(ghosts["anonymous"])][:2] == (None, False)
    assert got[str(ghosts["sso"])][:2] == ("ghost.sso@example.com", True)
    created = dict((r[0], r[1]) for r in db.sql("SELECT id::text, created_at FROM auth.users"))
    assert all(got[uid][2] == created[uid] for uid in got), "profile created_at copies auth.users"
    [(status, affected, finished, details)] = audit_rows(db)
    assert (status, affected, finished) == ("succeeded", 5, True)
    assert details["batches"] == 1


def test_upgrade_repairs_ghosts_keeps_app_profiles_and_resyncs_what_ghostsync_owns(db):
    members = seed_app_with_profiles(db, 3)
    # The app wrote an email that is not the account's: a stale profile, which
    # the install brings back in line (ghostsync_0009); nothing else of it changes.
    db.sql("UPDATE public.users SET email = 'edited-by-app@example.com' WHERE id = %s", (str(members[0]),))
    ghosts = seed_ghosts(db)
    before = profiles(db)
    db.upgrade(batch_size="2")
    after = profiles(db)
    edited = str(members[0])
    assert {k: after[k] for k in before if k != edited} == {k: v for k, v in before.items() if k != edited}
    assert after[edited][:3] == ("member0@example.com", True, before[edited][2])
    assert set(after) == set(before) | {str(g) for g in ghosts.values()}
    [(status, affected, _, details)] = audit_rows(db)
    assert (status, affected) == ("succeeded", 5)
    assert details["batches"] == 4, "8 auth users in batches of 2"
    [(status, affected, _, _)] = audit_rows(db, "resync_profiles")
    assert (status, affected) == ("succeeded", 1)
    assert duplicate_count(db) == 0


def test_one_signup_makes_exactly_one_correct_profile(db):
    db.upgrade()
    with db.auth() as auth:
        uid = auth.signup(email="new@example.com", user_meta={"full_name": "New"})
    rows = db.sql("SELECT email, email_verified, created_at = (SELECT created_at FROM auth.users WHERE id = %s) "
                  "FROM public.users WHERE id = %s", (str(uid), str(uid)))
    assert rows == [("new@example.com", False, True)]
    assert db.value("SELECT count(*) FROM public.users") == 1


@pytest.mark.parametrize("kind", ["phone", "anonymous", "sso_confirmed"])
def test_signup_of_other_kinds_makes_a_profile(db, kind):
    db.upgrade()
    with db.auth() as auth:
        if kind == "phone":
            uid = auth.signup(phone="+15550001111")
            expected = (None, False)
        elif kind == "anonymous":
            uid = auth.signup(anonymous=True)
            expected = (None, False)
        else:
            uid = auth.signup(email="sso@example.com", sso=True, confirmed=True)
            expected = ("sso@example.com", True)
    assert db.sql("SELECT email, email_verified FROM public.users WHERE id = %s", (str(uid),)) == [expected]


def test_upgrade_head_twice_is_a_no_op(db):
    seed_ghosts(db)
    db.upgrade()
    before = (profiles(db), audit_rows(db))
    db.upgrade()
    assert (profiles(db), audit_rows(db)) == before


def test_backfill_twice_logs_zero_the_second_time(db):
    seed_ghosts(db)
    db.upgrade()
    db.downgrade("ghostsync_0002")
    assert version(db) == "ghostsync_0002"
    db.upgrade()
    runs = audit_rows(db)
    assert [(r[0], r[1]) for r in runs] == [("succeeded", 5), ("succeeded", 0)]
    assert duplicate_count(db) == 0


def test_upgrade_accepts_postgres_scheme_url(db):
    seed_ghosts(db)
    proc = db.alembic_cli("upgrade", "head", url=db.url(scheme="postgres"))
    assert proc.returncode == 0, proc.stderr
    assert ghost_count(db) == 0


def test_a_ghost_the_backfill_cannot_write_is_named_and_the_run_ends_partial_not_succeeded(db):
    seed_ghosts(db)
    # An app rule that rejects one of the ghosts' profiles: that row is named, the others are written, and
    # the upgrade goes on (a signup must not wait for the app's rule); the run says it left a ghost.
    db.sql("""
        CREATE TABLE public.users (
          id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
          email text CHECK (email IS DISTINCT FROM 'ghost.sso@example.com'),
          email_verified boolean NOT NULL DEFAULT false,
          created_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now())
    """, user="postgres")
    proc = db.alembic_cli("upgrade", "head")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "example.com" not in out
    assert ghost_count(db) == 1
    [(status, repaired, finished, details)] = audit_rows(db)
    assert (status, repaired, finished) == ("partial", 4, True)
    [unrepairable] = details["unrepairable"]
    assert unrepairable["sqlstate"] == "23514" and "users_email_check" in unrepairable["message"]
    assert "example.com" not in json.dumps(details), "SQLSTATE and message only: the DETAIL holds row data"
    assert "1 ghost(s) could not be given a profile" in details["error"]
    db.sql("ALTER TABLE public.users DROP CONSTRAINT users_email_check", user="postgres")
    repaired_now = ghostsync_cli(db, "repair")
    assert repaired_now.returncode == 0, repaired_now.stdout + repaired_now.stderr
    assert ghost_count(db) == 0
    assert [r[0] for r in audit_rows(db)] == ["partial", "succeeded"]


def test_upgrade_without_auth_schema_fails_with_one_line(db):
    db.sql("DROP TABLE auth.users CASCADE")
    proc = db.alembic_cli("upgrade", "head")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "FAILED: ghostsync: auth.users does not exist" in out
    assert "Traceback" not in out
