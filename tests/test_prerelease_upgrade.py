"""A database the pre-release ghostsync installed (at its head, ghostsync_0007) reaches today's state by upgrading.

``tests/data/prerelease_0007.sql`` is what ``alembic upgrade head --sql`` printed on
the last commit before the first release (7429b08): functions in ``public`` named
like the incident report's, triggers ``on_auth_user_*``, no register. Revision
ghostsync_0008 converts such a database: the register is created and filled, the
objects move to ghostsync's names, the pre-release ones are dropped only where
their text is exactly what the pre-release ghostsync installed.
"""

from __future__ import annotations

from pathlib import Path

from ghostsync.testing.fixtures import supabase_database
from tests.catalog import fingerprint, trigger_definitions
from tests.seeding import ghost_count, ghostsync_cli, profiles, seed_app_with_profiles, seed_ghosts

PRERELEASE = (Path(__file__).parent / "data" / "prerelease_0007.sql").read_text()


def comparable(db) -> dict:
    found = fingerprint(db)
    found["register"] = [(kind, name) for kind, name, *_ in found["register"]]  # when recorded differs
    found["triggers"] = sorted(trigger_definitions(db).items())
    return found


def test_a_prerelease_install_upgrades_to_the_state_of_a_fresh_one(pg):
    with supabase_database(pg) as old, supabase_database(pg) as fresh:
        for db in (old, fresh):
            seed_app_with_profiles(db, 2)
            seed_ghosts(db)
        applied = old.psql(PRERELEASE)
        assert applied.returncode == 0, applied.stderr
        assert old.value("SELECT version_num FROM public.alembic_version") == "ghostsync_0007"
        assert old.value("SELECT to_regprocedure('public.handle_new_user()') IS NOT NULL") is True
        with old.auth() as auth:
            uid = auth.signup(email="between@example.com")  # synced by the pre-release trigger
        with fresh.auth() as auth:
            auth.signup(email="between@example.com")
        old.upgrade()
        fresh.upgrade()
        assert comparable(old) == comparable(fresh)
        assert old.value("SELECT to_regprocedure('public.handle_new_user()')") is None
        assert ghost_count(old) == 0 and str(uid) in profiles(old)
        assert ghostsync_cli(old, "status").returncode == 0


def test_an_app_function_of_the_reports_name_survives_the_conversion(pg):
    """On a pre-release install the app had replaced public.handle_new_user() with its own text: it is the
    app's, so the conversion leaves it (and the trigger calling it) where they are."""
    with supabase_database(pg) as db:
        assert db.psql(PRERELEASE).returncode == 0
        db.sql("""
            CREATE TABLE public.profiles (id uuid PRIMARY KEY REFERENCES auth.users ON DELETE CASCADE);
            CREATE OR REPLACE FUNCTION public.handle_new_user() RETURNS trigger LANGUAGE plpgsql
            SECURITY DEFINER SET search_path = '' AS $$
            BEGIN INSERT INTO public.profiles (id) VALUES (new.id); RETURN new; END $$;
        """, user="postgres")
        db.upgrade()
        assert db.value("SELECT count(*) FROM pg_trigger WHERE tgname = 'on_auth_user_created'") == 1
        assert "public.profiles" in db.value("SELECT prosrc FROM pg_proc "
                                             "WHERE oid = 'public.handle_new_user()'::regprocedure")
        with db.auth() as auth:
            uid = auth.signup(email="both@example.com")
        assert db.value("SELECT count(*) FROM public.profiles WHERE id = %s", (str(uid),)) == 1
        assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(uid),)) == 1
