"""Seed data for the suite: ghosts of every kind, made through the auth service's role."""

from __future__ import annotations

import uuid

from ghostsync import chain
from ghostsync.testing.fixtures import SupabaseDatabase
from ghostsync.testing.supabase import APP_PROFILES_SQL
from tests.paths import REPO


def seed_ghosts(db: SupabaseDatabase, prefix: str = "ghost") -> dict[str, uuid.UUID]:
    """One auth user of each kind, none with a profile."""
    with db.auth() as auth:
        return {
            "email_confirmed": auth.signup(email=f"{prefix}.confirmed@example.com", confirmed=True),
            "email_unconfirmed": auth.signup(email=f"{prefix}.unconfirmed@example.com"),
            "phone": auth.signup(phone=f"+1555{uuid.uuid4().int % 10**7:07d}"),
            "anonymous": auth.signup(anonymous=True),
            "sso": auth.signup(email=f"{prefix}.sso@example.com", sso=True, confirmed=True),
        }


def seed_app_with_profiles(db: SupabaseDatabase, n: int) -> list[uuid.UUID]:
    """The app's own public.users and ``n`` users whose profile the app wrote itself."""
    db.sql(APP_PROFILES_SQL, user="postgres")
    ids = []
    with db.auth() as auth:
        for i in range(n):
            uid = auth.signup(email=f"member{i}@example.com", confirmed=True)
            db.sql(
                "INSERT INTO public.users (id, email, email_verified) VALUES (%s, %s, true)",
                (str(uid), f"member{i}@example.com"),
                user="postgres",
            )
            ids.append(uid)
    return ids


def profiles(db: SupabaseDatabase) -> dict[str, tuple]:
    """Every profile by id: (email, email_verified, created_at, updated_at)."""
    rows = db.sql("SELECT id::text, email, email_verified, created_at, updated_at FROM public.users")
    return {row[0]: row[1:] for row in rows}


def audit_rows(db: SupabaseDatabase, job: str = "backfill_ghost_users") -> list[tuple]:
    """(status, records_affected, finished_at IS NOT NULL, details) of each run, oldest first."""
    return db.sql(
        "SELECT status, records_affected, finished_at IS NOT NULL, details "
        "FROM public.cleanup_audit_log WHERE job_name = %s ORDER BY id",
        (job,),
    )


def ghost_count(db: SupabaseDatabase) -> int:
    return int(db.value(
        "SELECT count(*) FROM auth.users u WHERE NOT EXISTS (SELECT 1 FROM public.users p WHERE p.id = u.id)"
    ))


def duplicate_count(db: SupabaseDatabase) -> int:
    return int(db.value("SELECT count(*) FROM (SELECT id FROM public.users GROUP BY id HAVING count(*) > 1) d"))


def head_revision() -> str:
    """The head of ghostsync's branch, read from the chain (never written down in a test)."""
    return chain.head(chain.script_directory())


def revisions_base_to_head() -> list[str]:
    """Every revision id of ghostsync's branch, oldest first."""
    return [rev.revision for rev in chain.path_to(chain.script_directory(), head_revision())]


def seed_bulk_ghosts(db: SupabaseDatabase, n: int, *, created_ago: str = "1 day", prefix: str = "bulk") -> None:
    """``n`` auth users inserted set-based with triggers off (as a dump/restore would), so all are ghosts."""
    db.sql(
        "SET session_replication_role = replica; "
        "INSERT INTO auth.users (instance_id, id, aud, role, email, email_confirmed_at, raw_app_meta_data, "
        "raw_user_meta_data, created_at, updated_at) "
        "SELECT '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', "
        "%s || g || '@example.com', CASE WHEN g %% 2 = 0 THEN now() END, '{}', '{}', "
        "now() - %s::interval, now() - %s::interval FROM generate_series(1, %s) g; "
        "SET session_replication_role = origin",
        (prefix, created_ago, created_ago, n),
    )


def failures(db: SupabaseDatabase) -> list[tuple]:
    """(user_id, operation, sqlstate, message, failures) of every recorded failed sync."""
    return db.sql("SELECT user_id::text, operation, sqlstate, message, failures FROM ghostsync.sync_failures "
                  "ORDER BY last_failed_at")


def ghostsync_cli(db: SupabaseDatabase, *args: str, url: str | None = None, timeout: float = 300,
                  env_extra: dict[str, str] | None = None):
    """Run the ``ghostsync`` command against ``db`` (as postgres unless ``url`` says otherwise)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DATABASE_URL=url or db.url(), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ghostsync", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


GHOSTSYNC_TRIGGERS = ("ghostsync_on_auth_user_created", "ghostsync_on_auth_user_updated",
                      "ghostsync_on_auth_user_deleted", "ghostsync_on_auth_users_deleted",
                      "zz_ghostsync_on_auth_user_created", "zz_ghostsync_on_auth_user_updated")


def triggers_on_auth_users(db: SupabaseDatabase) -> dict[str, str]:
    """Every non-internal trigger on auth.users: name -> tgenabled."""
    return dict(db.sql("SELECT tgname::text, tgenabled::text FROM pg_trigger "
                       "WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal"))


def downgrade(db: SupabaseDatabase, target: str) -> None:
    """``ghostsync migrate downgrade target``: as postgres, except on the "current" role setup, where only the
    owner of auth.users may drop ghostsync_0010's triggers (README, the table of role setups): there as
    supabase_admin."""
    url = db.url("supabase_admin") if db.owner.roles == "current" else None
    proc = ghostsync_cli(db, "migrate", "downgrade", target, url=url)
    assert proc.returncode == 0, proc.stderr
