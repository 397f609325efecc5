"""The SQL of apps that are already there (ghostsync.testing.supabase) installs as ``postgres`` in every
role setup and does what its docstring says, on a database without ghostsync."""

from __future__ import annotations

import psycopg2
import pytest

from ghostsync.testing.fixtures import supabase_database
from ghostsync.testing.supabase import (
    APP_CHECKS_SQL,
    APP_DEFERRABLE_PRIMARY_KEY_SQL,
    APP_EMAIL_NOT_NULL_SQL,
    APP_PRIMARY_KEY_INCLUDE_SQL,
    APP_PROFILE_TRIGGER_SQL,
    APP_PROFILES_SQL,
    APP_UNIQUE_EMAIL_DEFERRED_SQL,
    MANAGING_USER_DATA_POLICIES_SQL,
    MANAGING_USER_DATA_SQL,
    ROLE_SETUPS,
)


@pytest.fixture(params=ROLE_SETUPS)
def setup_db(request, supabase_pg_major, supabase_servers):
    with supabase_database(supabase_servers.get(supabase_pg_major, request.param)) as database:
        yield database


def test_supabase_managing_user_data_pattern(setup_db):
    db = setup_db
    db.sql(MANAGING_USER_DATA_SQL, user="postgres")
    db.sql(MANAGING_USER_DATA_POLICIES_SQL, user="postgres")
    with db.auth() as auth:
        uid = auth.signup(email="jo@example.com", user_meta={"first_name": "Jo", "last_name": "Doe"})
    assert db.sql("SELECT first_name, last_name FROM public.profiles WHERE id = %s", (str(uid),)) == [("Jo", "Doe")]
    assert db.sql("SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'public.handle_new_user()'::regprocedure") \
        == [(True, ['search_path=""'])]
    assert db.value("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.profiles'::regclass") == 3
    assert db.value("SELECT tgname FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                    "AND NOT tgisinternal") == "on_auth_user_created"
    with db.auth() as auth:
        auth.hard_delete(uid)
    assert db.value("SELECT count(*) FROM public.profiles") == 0  # on delete cascade


def test_app_profile_table_trigger_and_constraints(setup_db):
    db = setup_db
    for sql in (APP_PROFILES_SQL, APP_PROFILE_TRIGGER_SQL, APP_UNIQUE_EMAIL_DEFERRED_SQL, APP_EMAIL_NOT_NULL_SQL,
                APP_CHECKS_SQL):
        db.sql(sql, user="postgres")
    with db.auth() as auth:
        a = auth.signup(email="a@example.com")
        b = auth.signup(email="b@example.com")
    db.sql("INSERT INTO public.users (id, email) VALUES (%s, '  A@Example.COM ')", (str(a),), user="postgres")
    assert db.value("SELECT email FROM public.users WHERE id = %s", (str(a),)) == "a@example.com"
    conn = psycopg2.connect(db.url("postgres"))
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO public.users (id, email) VALUES (%s, 'a@example.com')", (str(b),))  # deferred
            with pytest.raises(psycopg2.errors.UniqueViolation):
                conn.commit()
    finally:
        conn.close()
    with pytest.raises(psycopg2.errors.NotNullViolation):
        db.sql("INSERT INTO public.users (id, email) VALUES (%s, NULL)", (str(b),), user="postgres")
    with pytest.raises(psycopg2.errors.CheckViolation):
        db.sql("INSERT INTO public.users (id, email) VALUES (%s, 'QZYI59uAef4ofQT28jGw6v0-T9hfMNcjoVeE-usAiw4')",
               (str(b),), user="postgres")


@pytest.mark.parametrize("sql", [APP_DEFERRABLE_PRIMARY_KEY_SQL, APP_PRIMARY_KEY_INCLUDE_SQL],
                         ids=["deferrable-pk", "pk-include"])
def test_app_primary_key_variants(db, sql):
    db.sql(sql, user="postgres")
    with db.auth() as auth:
        uid = auth.signup(email="pk@example.com")
    index = db.sql("SELECT i.indnatts, i.indnkeyatts, c.condeferrable FROM pg_index i JOIN pg_constraint c "
                   "ON c.conindid = i.indexrelid WHERE c.conrelid = 'public.users'::regclass AND c.contype = 'p'")[0]
    if sql is APP_DEFERRABLE_PRIMARY_KEY_SQL:
        assert index == (1, 1, True)
        with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState):
            db.sql("INSERT INTO public.users (id, email) VALUES (%s, 'x') ON CONFLICT (id) DO NOTHING",
                   (str(uid),), user="postgres")
    else:
        assert index == (2, 1, False)
        db.sql("INSERT INTO public.users (id, email) VALUES (%s, 'x') ON CONFLICT (id) DO NOTHING",
               (str(uid),), user="postgres")
