## The test `ghostsync revision` writes beside a follow-up (data False) or a data revision (data True).
## Rendered by ghostsync.generator.revision_test_source, with Mako, as Alembic renders script.py.mako.
"""Tests of ${kind} ${revision}, written beside it by `ghostsync revision`.

They run on throwaway Supabase-like databases: the ``supabase_db`` fixture of
the ``ghostsync[testing]`` pytest plugin, on every PostgreSQL version it finds.
Keep them, and add what this revision itself promises.
"""

from __future__ import annotations

% if not own:
from pathlib import Path
% endif
% if not data:
from typing import Any
% endif

import pytest
from alembic.script import ScriptDirectory
% if own:

% endif
from ghostsync import chain, findings, status
from ghostsync.testing.fixtures import SupabaseDatabase

REVISION = ${revision_literal}
ALEMBIC_INI = ${ini_expression}


@pytest.fixture
def database(supabase_db: SupabaseDatabase) -> SupabaseDatabase:
    return supabase_db


def script() -> ScriptDirectory:
    return chain.script_directory(ALEMBIC_INI)


def previous() -> str:
    down = script().get_revision(REVISION).down_revision
    assert isinstance(down, str), f"{REVISION} should revise one revision, not {down!r}"
    return down


# The throwaway database reaches the env.py as sqlalchemy.url, -x database_url and DATABASE_URL; a connection
# the env.py makes anywhere else fails the test before anything runs there (ghostsync.testing.guard).
def upgrade(db: SupabaseDatabase, target: str) -> None:
    db.upgrade(target, alembic_ini=ALEMBIC_INI)


def downgrade(db: SupabaseDatabase, target: str) -> None:
    db.downgrade(target, alembic_ini=ALEMBIC_INI)


def collect(db: SupabaseDatabase) -> status.Status:
    with db.engine().connect() as conn:
        return status.collect(conn, script=script())


def healthy(found: status.Status) -> None:
    assert not found.problems, [p.message for p in found.problems]
    assert {w.code for w in found.warnings} <= {findings.BEHIND_HEAD.code}, [w.message for w in found.warnings]


def signups_never_fail(db: SupabaseDatabase) -> None:
    """Every kind of signup, change and delete goes through and leaves its profile right; a profile
    write the app's table refuses is recorded, and the signup still commits."""
    with db.auth() as auth:
        email = auth.signup(email="ann@example.com", user_meta={"full_name": "Ann Example"})
        confirmed = auth.signup(email="bo@example.com", confirmed=True, user_meta={"full_name": "Bo"})
        phone = auth.signup(phone="+15550001111")
        anonymous = auth.signup(anonymous=True)
        sso = auth.signup(email="cy@example.com", sso=True, confirmed=True)
        auth.confirm_email(email)
        auth.soft_delete(confirmed)
        auth.hard_delete(phone)
    found = collect(db)
    healthy(found)
    assert (found.ghosts, found.orphans, found.stale_profiles, found.failed_syncs) == (0, 0, 0, 0)
    assert db.value("SELECT count(*) FROM public.users WHERE id IN (%s, %s, %s)",
                    (str(email), str(anonymous), str(sso))) == 3
    db.sql("ALTER TABLE public.users ADD CONSTRAINT app_refuses_new_profiles CHECK (false) NOT VALID")
    try:
        with db.auth() as auth:
            refused = auth.signup(email="refused@example.com")
    finally:
        db.sql("ALTER TABLE public.users DROP CONSTRAINT app_refuses_new_profiles")
    assert db.value("SELECT count(*) FROM auth.users WHERE id = %s", (str(refused),)) == 1
    assert db.value("SELECT count(*) FROM ghostsync.sync_failures WHERE user_id = %s", (str(refused),)) == 1


def test_renders_offline(database: SupabaseDatabase) -> None:
    sql = database.offline_sql(f"{previous()}:{REVISION}", alembic_ini=ALEMBIC_INI)
    assert f"version_num='{REVISION}'" in sql


% if data:
def test_the_job_rewrites_every_stale_profile_and_its_downgrade_changes_nothing(database: SupabaseDatabase) -> None:
    job = script().get_revision(REVISION).module.JOB_NAME
    upgrade(database, previous())
    with database.auth() as auth:
        users = [auth.signup(email=f"user{i}@example.com", confirmed=i % 2 == 0,
                             user_meta={"full_name": f"User {i}"}) for i in range(5)]
    # The accounts change while the sync's triggers are off (as a restore would): stale profiles.
    database.sql("SET session_replication_role = replica; "
                 "UPDATE auth.users SET email = 'changed.' || email, "
                 "raw_user_meta_data = raw_user_meta_data || '{\"full_name\": \"Changed\"}' "
                 "WHERE email IS NOT NULL; SET session_replication_role = origin")
    assert collect(database).stale_profiles == len(users)

    upgrade(database, REVISION)
    found = collect(database)
    assert found.stale_profiles == 0
    healthy(found)
    assert found.jobs[job] is not None and found.jobs[job]["status"] == "succeeded"
    assert found.jobs[job]["records_affected"] == len(users)

    rewritten = database.sql("SELECT * FROM public.users ORDER BY id")
    downgrade(database, previous())
    assert database.sql("SELECT * FROM public.users ORDER BY id") == rewritten
    healthy(collect(database))


def test_signups_never_fail(database: SupabaseDatabase) -> None:
    upgrade(database, REVISION)
    signups_never_fail(database)
% else:
def catalog(db: SupabaseDatabase, signatures: list[str], triggers: list[tuple[str, str]]) -> dict[str, Any]:
    """What the database holds: each function's text, each trigger's definition (None: missing)."""
    found: dict[str, Any] = {}
    for signature in signatures:
        found[signature] = db.value(
            "SELECT prosrc FROM pg_catalog.pg_proc WHERE oid = pg_catalog.to_regprocedure(%s)", (signature,))
    for name, table in triggers:
        found[name] = db.value(
            "SET search_path = ''; SELECT pg_catalog.pg_get_triggerdef(t.oid) FROM pg_catalog.pg_trigger AS t"
            " WHERE t.tgrelid = pg_catalog.to_regclass(%s) AND t.tgname = %s AND NOT t.tgisinternal",
            (table, name))
    return found


def declared(revision: str, signatures: list[str], triggers: list[tuple[str, str]]) -> dict[str, Any]:
    """What ``revision`` declares for the same objects (None: not there at that revision)."""
    at = chain.declared_at(revision, script())
    found: dict[str, Any] = {}
    for signature in signatures:
        found[signature] = at.body(signature) if signature in at.functions else None
    for name, _ in triggers:
        found[name] = at.triggers[name].definition if name in at.triggers else None
    return found


def objects() -> tuple[list[str], list[tuple[str, str]]]:
    """Every function and trigger declared before or at this revision."""
    before, after = chain.declared_at(previous(), script()), chain.declared_at(REVISION, script())
    signatures = sorted(set(before.functions) | set(after.functions))
    triggers = sorted({(t.name, t.table) for t in (*before.triggers.values(), *after.triggers.values())})
    return signatures, triggers


def test_upgrade_installs_what_it_declares_and_downgrade_restores_the_previous_texts_exactly(
        database: SupabaseDatabase) -> None:
    signatures, triggers = objects()
    upgrade(database, previous())
    before = catalog(database, signatures, triggers)
    assert before == declared(previous(), signatures, triggers)

    upgrade(database, REVISION)
    assert catalog(database, signatures, triggers) == declared(REVISION, signatures, triggers)
    found = collect(database)
    assert found.revision == REVISION
    healthy(found)

    downgrade(database, previous())
    assert catalog(database, signatures, triggers) == before, "the downgrade restores the previous texts exactly"
    found = collect(database)
    assert found.revision == previous()
    healthy(found)
    assert [w.code for w in found.warnings] == [findings.BEHIND_HEAD.code]

    upgrade(database, REVISION)
    assert catalog(database, signatures, triggers) == declared(REVISION, signatures, triggers)


def test_signups_never_fail(database: SupabaseDatabase) -> None:
    upgrade(database, REVISION)
    signups_never_fail(database)
% endif
