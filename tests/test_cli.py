"""The ghostsync command against real throwaway databases: every command, every exit code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from ghostsync import backfill
from ghostsync.testing.fixtures import supabase_database
from ghostsync.urls import normalize
from tests.catalog import fingerprint
from tests.seeding import (
    audit_rows,
    duplicate_count,
    ghost_count,
    ghostsync_cli,
    profiles,
    seed_app_with_profiles,
    seed_bulk_ghosts,
    seed_ghosts,
)

JSON_KEYS = {"ghosts", "orphans", "failed_syncs", "stale_profiles", "trigger_enabled", "function_matches_head",
             "revision", "healthy", "problems"}


@pytest.fixture
def head(db):
    seed_ghosts(db)
    db.upgrade()
    return db


def status_json(db, *args):
    proc = ghostsync_cli(db, "status", "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_status_healthy(head):
    proc = ghostsync_cli(head, "status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ghostsync status: HEALTHY")
    code, data = status_json(head)
    assert code == 0
    assert set(data) >= JSON_KEYS
    assert (data["ghosts"], data["orphans"], data["failed_syncs"], data["stale_profiles"]) == (0, 0, 0, 0)
    assert data["trigger_enabled"] is True and data["function_matches_head"] is True
    assert data["revision"] == data["head"] and data["healthy"] is True and data["problems"] == []
    assert data["last_backfill"]["status"] == "succeeded" and data["last_backfill"]["records_affected"] == 5


BREAKAGES = {
    "ghost": ("SET session_replication_role = replica; INSERT INTO auth.users (id, email, created_at) "
              "VALUES (gen_random_uuid(), 'g@example.com', now())", "have no profile (ghosts)"),
    "orphan": ("SET session_replication_role = replica; INSERT INTO public.users (id, email) "
               "VALUES (gen_random_uuid(), 'o@example.com')", "profile(s) have no auth user (orphans)"),
    "failed sync": ("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) "
                    "VALUES (gen_random_uuid(), 'INSERT', '23505', 'boom')", "failed and are recorded"),
    "stale": ("SET session_replication_role = replica; UPDATE auth.users SET email = 'changed@example.com' "
              "WHERE id = (SELECT id FROM auth.users WHERE email IS NOT NULL LIMIT 1)", "(stale)"),
    "trigger disabled": ("ALTER TABLE auth.users DISABLE TRIGGER on_auth_user_updated",
                         "trigger on_auth_user_updated on auth.users is disabled"),
    "trigger missing": ("DROP TRIGGER on_auth_user_created ON auth.users",
                        "trigger on_auth_user_created on auth.users is missing"),
    "function drift": (None, "function public.handle_new_user() differs from what revision"),
    "revision behind": ("UPDATE public.alembic_version SET version_num = 'ghostsync_0006'",
                        "the database is at revision ghostsync_0006, head is"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_status_unhealthy_names_each_reason(head, breakage):
    sql, reason = BREAKAGES[breakage]
    if breakage == "function drift":
        source = head.value("SELECT pg_get_functiondef('public.handle_new_user()'::regprocedure)")
        head.sql(source.replace("RETURN NEW;", "RETURN NEW; -- edited in the SQL editor"), user="postgres")
    else:
        head.sql(sql)
    proc = ghostsync_cli(head, "status")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "UNHEALTHY" in proc.stdout
    assert reason in proc.stdout
    code, data = status_json(head)
    assert code == 1 and data["healthy"] is False
    assert any(reason in p for p in data["problems"])


def test_status_prometheus_textfile(head, tmp_path):
    target = tmp_path / "ghostsync.prom"
    head.sql(BREAKAGES["failed sync"][0])
    proc = ghostsync_cli(head, "status", "--prometheus", str(target))
    assert proc.returncode == 1
    samples = {s.name: s.value for family in text_string_to_metric_families(target.read_text())
               for s in family.samples}
    assert samples["ghostsync_failed_syncs"] == 1
    assert samples["ghostsync_ghosts"] == 0
    assert samples["ghostsync_healthy"] == 0
    assert samples["ghostsync_trigger_enabled"] == 1


def test_status_since_on_a_large_table(db):
    db.upgrade()
    seed_bulk_ghosts(db, 30_000, created_ago="2 days")
    db.sql("SET session_replication_role = replica; INSERT INTO auth.users (id, email, created_at) "
           "VALUES (gen_random_uuid(), 'recent@example.com', now() - interval '5 minutes')")
    code, full = status_json(db)
    assert (code, full["ghosts"]) == (1, 30_001)
    code, recent = status_json(db, "--since", "1h")
    assert (code, recent["ghosts"], recent["orphans"], recent["stale_profiles"]) == (1, 1, None, None)
    assert recent["since_seconds"] == 3600
    code, quiet = status_json(db, "--since", "1m")
    assert (code, quiet["ghosts"]) == (0, 0)


def test_status_could_not_check(pg, head):
    cases = [
        ("mysql://u:secret@h/d", "not a PostgreSQL URL"),
        ("postgres://postgres@127.0.0.1:1/postgres", "connection refused"),
        (pg.server.url("postgres", user="postgres"), "no auth.users in this database"),
    ]
    head.sql("CREATE ROLE nopriv LOGIN")
    cases.append((head.url("nopriv"), "lacks a privilege"))
    for url, message in cases:
        proc = ghostsync_cli(head, "status", url=url)
        assert proc.returncode == 2, (url, proc.stdout, proc.stderr)
        assert message in proc.stderr, (url, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "secret" not in proc.stderr
    head.sql("UPDATE public.alembic_version SET version_num = 'f00dfeed'")
    proc = ghostsync_cli(head, "status")
    assert proc.returncode == 2
    assert "revision f00dfeed, which this ghostsync does not know" in proc.stderr
    proc = ghostsync_cli(head, "--debug", "status")
    assert "Traceback" in proc.stderr


def test_status_before_install(db):
    proc = ghostsync_cli(db, "status")
    assert proc.returncode == 2
    assert "ghostsync is not installed" in proc.stderr


def test_backfill_dry_run_writes_nothing(db):
    db.upgrade()
    seed_bulk_ghosts(db, 1_000)
    proc = ghostsync_cli(db, "backfill", "--dry-run", "--batch-size", "300")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"would repair 1000 ghost user\(s\).*batch\(es\) of 300; nothing written", proc.stdout)
    assert ghost_count(db) == 1000
    assert audit_rows(db)[-1][0] == "dry_run"


def test_backfill_interrupted_then_resumed(db):
    db.upgrade()
    seed_bulk_ghosts(db, 5_000)
    engine = create_engine(normalize(db.url()), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        cut = backfill.run_batched(conn, backfill.current_statements(), batch_size=500, mode="cli", max_batches=3)
    engine.dispose()
    assert cut.status == "interrupted" and cut.batches == 3
    proc = ghostsync_cli(db, "backfill", "--batch-size", "500")
    assert proc.returncode == 0, proc.stderr
    assert "resuming after" in proc.stderr
    assert "\r" not in proc.stderr, "no progress bar when stderr is not a terminal"
    assert ghost_count(db) == 0 and duplicate_count(db) == 0
    runs = audit_rows(db)
    assert [r[0] for r in runs[-2:]] == ["interrupted", "succeeded"]
    assert runs[-2][1] + runs[-1][1] == 5_000
    assert runs[-1][3]["batches"] < 10, "the second run walked only what was left"
    again = ghostsync_cli(db, "backfill")
    assert "repaired 0 ghost user(s)" in again.stdout


def test_repair_is_idempotent_and_logged(head):
    head.sql(BREAKAGES["ghost"][0])
    first = ghostsync_cli(head, "repair")
    assert first.returncode == 0, first.stderr
    assert "1 ghost(s) backfilled" in first.stdout
    second = ghostsync_cli(head, "repair")
    assert second.returncode == 0
    assert "0 failed sync(s) repaired, 0 still failing; 0 stale profile(s) fixed; 0 ghost(s) backfilled" \
        in second.stdout
    jobs = head.sql("SELECT job_name, status FROM public.cleanup_audit_log ORDER BY id")
    assert jobs.count(("repair_failed_syncs", "succeeded")) == 2


def test_export_supabase_equals_online_upgrade(pg, tmp_path):
    console_script = str(Path(sys.executable).parent / "ghostsync")
    proc = subprocess.run([console_script, "export-supabase", str(tmp_path / "migrations")], capture_output=True,
                          text=True, check=True)
    files = sorted((tmp_path / "migrations").iterdir())
    assert [p.name for p in files] == [line.rsplit("/", 1)[1] for line in proc.stdout.split()]
    assert all(re.fullmatch(r"\d{14}_ghostsync_\d{4}_[a-z_]+\.sql", p.name) for p in files)
    assert len(files) == len(set(p.name[:14] for p in files)) == 7
    with supabase_database(pg) as online, supabase_database(pg) as pushed:
        for database in (online, pushed):
            seed_app_with_profiles(database, 2)
            seed_ghosts(database)
        online.upgrade()
        for path in files:  # as `supabase db push` does: each file in its own transaction, as postgres
            applied = subprocess.run(
                [pushed.server.psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                 "-d", pushed.url(), "-f", str(path)], capture_output=True, text=True)
            assert applied.returncode == 0, (path.name, applied.stderr)
        assert fingerprint(pushed) == fingerprint(online)
        assert ghost_count(pushed) == 0 and len(profiles(pushed)) == 7
        assert ghostsync_cli(pushed, "status").returncode == 0


def test_backfill_records_a_ghost_it_cannot_repair_and_repairs_the_rest(db):
    db.upgrade()
    db.sql("ALTER TABLE public.users ADD CONSTRAINT users_email_key UNIQUE (email)", user="postgres")
    with db.auth() as auth:
        auth.signup(email="bulk777@example.com", sso=True)  # a bulk ghost will have this address too
    seed_bulk_ghosts(db, 3_000)
    proc = ghostsync_cli(db, "backfill", "--batch-size", "1000")
    assert proc.returncode == 1
    assert "repaired 2999 ghost user(s)" in proc.stdout
    assert "1 ghost(s) could not be repaired (recorded in ghostsync.sync_failures" in proc.stderr
    [(operation, sqlstate, message)] = db.sql("SELECT operation, sqlstate, message FROM ghostsync.sync_failures")
    assert (operation, sqlstate) == ("BACKFILL", "23505") and "users_email_key" in message
    assert ghost_count(db) == 1 and duplicate_count(db) == 0


def test_drift_advice_reinstalls_the_function(head):
    source = head.value("SELECT pg_get_functiondef('public.handle_new_user()'::regprocedure)")
    head.sql(source.replace("RETURN NEW;", "RETURN NEW; -- edited by hand"), user="postgres")
    proc = ghostsync_cli(head, "status")
    advice = re.search(r"`alembic downgrade (\S+) && alembic upgrade head` reinstalls it", proc.stdout)
    assert proc.returncode == 1 and advice, proc.stdout
    assert advice.group(1) == "ghostsync_0005"
    head.downgrade(advice.group(1))
    head.upgrade("head")
    assert ghostsync_cli(head, "status").returncode == 0


def test_a_run_whose_session_lives_on_but_makes_no_progress_is_taken_for_dead(db):
    """As through a transaction-mode pooler: the recorded server session is alive, the client is not."""
    db.upgrade()
    seed_bulk_ghosts(db, 100)
    import psycopg2

    pooled = psycopg2.connect(db.url())  # stands for the pooled server session that outlives its client
    try:
        with pooled.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            pid, started = cur.fetchone()
        pooled.commit()
        db.sql("INSERT INTO public.cleanup_audit_log (job_name, status, started_at, details) VALUES "
               "('backfill_ghost_users', 'running', now() - interval '5 minutes', jsonb_build_object("
               "'pid', %s::int, 'backend_start', %s::timestamptz, 'heartbeat_at', now() - interval '5 minutes'))",
               (pid, started))
        proc = ghostsync_cli(db, "backfill")
    finally:
        pooled.close()
    assert proc.returncode == 0, proc.stderr
    assert [r[0] for r in audit_rows(db)][-2:] == ["interrupted", "succeeded"]
