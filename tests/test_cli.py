"""The ghostsync command against real throwaway databases: every command, every exit code."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from ghostsync import backfill, chain
from ghostsync.urls import normalize
from tests.seeding import (
    GHOSTSYNC_TRIGGERS,
    audit_rows,
    duplicate_count,
    ghost_count,
    ghostsync_cli,
    seed_app_with_profiles,
    seed_bulk_ghosts,
    seed_ghosts,
)

JSON_KEYS = {"schema_version", "up", "check", "healthy", "revision", "head", "at_head", "standby", "ghosts",
             "orphans", "stale_profiles", "failed_syncs", "auth_users", "profiles", "triggers", "functions",
             "app_triggers", "tables", "jobs", "counters", "problems", "warnings", "error"}


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
    assert set(data) == JSON_KEYS
    assert (data["schema_version"], data["up"], data["check"]) == (2, True, "full")
    assert (data["ghosts"], data["orphans"], data["failed_syncs"], data["stale_profiles"]) == (0, 0, 0, 0)
    assert (data["auth_users"], data["profiles"]) == (5, 5)
    assert all(t["state"] == "enabled" and t["matches"] for t in data["triggers"].values())
    assert set(data["triggers"]) == set(GHOSTSYNC_TRIGGERS)
    assert all(f["state"] == "matches" for f in data["functions"].values())
    assert data["revision"] == data["head"] and data["at_head"] is True
    assert data["healthy"] is True and data["problems"] == [] and data["warnings"] == []
    assert data["jobs"]["backfill_ghost_users"]["status"] == "succeeded"
    assert data["jobs"]["backfill_ghost_users"]["records_affected"] == 5


# Each breakage: its SQL (run as the superuser), the problem code status must report, and words of its message.
BREAKAGES = {
    "ghost": ("SET session_replication_role = replica; INSERT INTO auth.users (id, email, created_at) "
              "VALUES (gen_random_uuid(), 'g@example.com', now())", "ghosts", "have no profile (ghosts)"),
    "orphan": ("SET session_replication_role = replica; INSERT INTO public.users (id, email) "
               "VALUES (gen_random_uuid(), 'o@example.com')", "orphans", "profile(s) have no auth user (orphans)"),
    "failed sync": ("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) "
                    "VALUES (gen_random_uuid(), 'INSERT', '23505', 'boom')", "failed_syncs", "failed and are recorded"),
    "stale": ("SET session_replication_role = replica; UPDATE auth.users SET email = 'changed@example.com' "
              "WHERE id = (SELECT id FROM auth.users WHERE email IS NOT NULL LIMIT 1)", "stale_profiles", "(stale)"),
    "stale deleted_at": ("SET session_replication_role = replica; UPDATE auth.users SET deleted_at = now() "
                         "WHERE id = (SELECT id FROM auth.users LIMIT 1)", "stale_profiles", "deleted_at"),
    "trigger disabled": ("ALTER TABLE auth.users DISABLE TRIGGER ghostsync_on_auth_user_updated",
                         "trigger_disabled", "trigger ghostsync_on_auth_user_updated on auth.users is disabled"),
    "trigger replica only": ("ALTER TABLE auth.users ENABLE REPLICA TRIGGER ghostsync_on_auth_user_created",
                             "trigger_replica_only", "fires only in replica mode"),
    "trigger missing": ("DROP TRIGGER ghostsync_on_auth_user_created ON auth.users",
                        "trigger_missing", "trigger ghostsync_on_auth_user_created on auth.users is missing"),
    "trigger redefined": ("DROP TRIGGER ghostsync_on_auth_user_updated ON auth.users; "
                          "CREATE TRIGGER ghostsync_on_auth_user_updated AFTER UPDATE OF email "
                          "ON auth.users FOR EACH ROW EXECUTE FUNCTION ghostsync.handle_user_updated()",
                          "trigger_drift", "differs from what revision"),
    "function edited": (None, "function_drift", "function ghostsync.handle_new_user() differs from what revision"),
    "function executable by anon": ("GRANT EXECUTE ON FUNCTION ghostsync.handle_new_user() TO anon",
                                    "function_drift", "EXECUTE granted to anon"),
    "function owner changed": ("ALTER FUNCTION ghostsync.handle_user_deleted() OWNER TO supabase_admin",
                               "function_drift", "owner supabase_admin (installed by postgres)"),
    "rls off on the audit log": ("ALTER TABLE public.cleanup_audit_log DISABLE ROW LEVEL SECURITY", "rls_disabled",
                                 "public.cleanup_audit_log has row level security disabled"),
    "anon may truncate the ledger": ("GRANT TRUNCATE ON ghostsync.sync_failures TO anon", "open_privileges",
                                     "TRUNCATE to anon"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_status_unhealthy_names_each_reason(head, breakage):
    sql, code, reason = BREAKAGES[breakage]
    if breakage == "function edited":
        source = head.value("SELECT pg_get_functiondef('ghostsync.handle_new_user()'::regprocedure)")
        head.sql(source.replace("RETURN NEW;", "RETURN NEW; -- edited in the SQL editor"), user="postgres")
    else:
        head.sql(sql)
    proc = ghostsync_cli(head, "status")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "UNHEALTHY" in proc.stdout
    assert reason in proc.stdout
    status_code, data = status_json(head)
    assert status_code == 1 and data["healthy"] is False
    assert any(p["code"] == code and reason in p["message"] for p in data["problems"]), data["problems"]


def test_behind_head_with_matching_objects_is_healthy_with_a_warning(head):
    head.downgrade("ghostsync_0007")
    proc = ghostsync_cli(head, "status")
    assert proc.returncode == 0, proc.stdout
    assert "warning [behind_head]: the database is at revision ghostsync_0007" in proc.stdout
    assert "differs" not in proc.stdout and "DIFFERS" not in proc.stdout
    code, data = status_json(head)
    assert (code, data["healthy"], data["at_head"], data["revision"]) == (0, True, False, "ghostsync_0007")
    assert [w["code"] for w in data["warnings"]] == ["behind_head"]
    assert "ghostsync_on_auth_users_deleted" not in data["triggers"], "0008's trigger is not expected at 0007"


def test_status_prometheus_textfile(head, tmp_path):
    target = tmp_path / "ghostsync.prom"
    head.sql(BREAKAGES["failed sync"][0])
    proc = ghostsync_cli(head, "status", "--prometheus", str(target))
    assert proc.returncode == 1
    samples = {(s.name, s.labels.get("trigger")): s.value
               for family in text_string_to_metric_families(target.read_text()) for s in family.samples
               if s.labels.get("check") == "full"}
    assert samples[("ghostsync_up", None)] == 1
    assert samples[("ghostsync_failed_syncs", None)] == 1
    assert samples[("ghostsync_ghosts", None)] == 0
    assert samples[("ghostsync_healthy", None)] == 0
    assert samples[("ghostsync_trigger_enabled", "ghostsync_on_auth_user_created")] == 1


def test_status_quick_reads_no_table_and_keeps_every_key(head):
    head.sql(BREAKAGES["ghost"][0])
    code, full = status_json(head)
    assert (code, full["ghosts"]) == (1, 1)
    code, quick = status_json(head, "--quick")
    assert set(quick) == set(full)
    assert (code, quick["check"], quick["ghosts"], quick["orphans"], quick["stale_profiles"]) == (0, "quick", None,
                                                                                                    None, None)
    head.sql(BREAKAGES["trigger disabled"][0])
    code, quick = status_json(head, "--quick")
    assert code == 1 and [p["code"] for p in quick["problems"]] == ["trigger_disabled"]


def test_status_could_not_check(pg, head):
    cases = [
        ("mysql://u:secret@h/d", "not a PostgreSQL URL"),
        ("postgres://postgres@127.0.0.1:1/postgres", "cannot connect to 127.0.0.1:1: "),
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
        as_json = ghostsync_cli(head, "status", "--json", url=url)
        assert as_json.returncode == 2
        failure = json.loads(as_json.stdout)
        assert (failure["schema_version"], failure["up"], failure["healthy"]) == (2, False, False)
        assert failure["error"]["code"] and message in failure["error"]["message"]
    head.sql("UPDATE public.alembic_version SET version_num = 'f00dfeed'")
    proc = ghostsync_cli(head, "status")
    assert proc.returncode == 2
    # a row no branch of this configuration knows, where ghostsync's register exists: a host's revision
    assert "alembic_version holds f00dfeed, none of which this configuration knows as ghostsync's: pass the " \
        "host project's --alembic-config" in proc.stderr, proc.stderr
    head.sql("UPDATE public.alembic_version SET version_num = 'ghostsync_9999'")
    proc = ghostsync_cli(head, "status")
    assert proc.returncode == 2
    assert "revision ghostsync_9999, which this ghostsync does not know" in proc.stderr
    proc = ghostsync_cli(head, "--debug", "status")
    assert "Traceback" in proc.stderr


def test_status_before_install(db):
    proc = ghostsync_cli(db, "status")
    assert proc.returncode == 2
    assert "ghostsync is not installed" in proc.stderr
    failure = json.loads(ghostsync_cli(db, "status", "--json").stdout)
    assert failure["error"]["code"] == "not_installed"


@pytest.mark.parametrize("app_table", [False, True])
def test_before_install_status_and_a_dry_run_still_count_the_ghosts(db, app_table):
    """Not installed is still exit 2 (could not check), but the one line (and the JSON) says how many ghosts
    there are: every auth user without public.users, else those without a profile in the app's own table."""
    if app_table:
        seed_app_with_profiles(db, 2)
    seed_ghosts(db)
    expected = f"5 of {7 if app_table else 5} auth user(s) have no profile (ghosts)"
    for command in (("status",), ("backfill", "--dry-run")):
        proc = ghostsync_cli(db, *command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "ghostsync is not installed" in proc.stderr
        assert expected in proc.stderr, (command, proc.stderr)
    proc = ghostsync_cli(db, "status", "--json")
    failure = json.loads(proc.stdout)
    assert proc.returncode == 2 and failure["error"]["code"] == "not_installed"
    assert (failure["ghosts"], failure["auth_users"]) == (5, 7 if app_table else 5)
    if app_table:
        assert ghost_count(db) == 5, "nothing written"
    else:
        assert db.value("SELECT to_regclass('public.users')") is None, "nothing written"


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
        declared = chain.declared_at(chain.head(chain.script_directory()))
        cut = backfill.run_batched(conn, backfill.statements_for(declared), batch_size=500, mode="cli",
                                   max_batches=3)
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
    for breakage in ("ghost", "orphan", "failed sync", "stale"):
        head.sql(BREAKAGES[breakage][0])
    first = ghostsync_cli(head, "repair")
    assert first.returncode == 0, first.stderr
    assert ("1 failed sync(s) repaired, 0 still failing; 1 stale profile(s) rewritten; 1 orphan(s) deleted; "
            "1 ghost(s) backfilled") in first.stdout, first.stdout
    logged = head.value("SELECT count(*) FROM public.cleanup_audit_log")
    second = ghostsync_cli(head, "repair")
    assert second.returncode == 0
    assert ("0 failed sync(s) repaired, 0 still failing; 0 stale profile(s) rewritten; 0 orphan(s) deleted; "
            "0 ghost(s) backfilled") in second.stdout
    jobs = head.sql("SELECT job_name, status FROM public.cleanup_audit_log ORDER BY id")
    for job in ("repair_failed_syncs", "repair_stale_profiles", "repair_orphans"):
        assert jobs.count((job, "succeeded")) == 1, job
    assert head.value("SELECT count(*) FROM public.cleanup_audit_log") == logged, "a no-op repair logs nothing"


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


@pytest.mark.parametrize("target", ["head", "ghostsync_0007"])
def test_drift_advice_reinstalls_what_the_revision_declares(head, target):
    head.downgrade(target) if target != "head" else None
    source = head.value("SELECT pg_get_functiondef('ghostsync.handle_new_user()'::regprocedure)")
    head.sql(source.replace("RETURN NEW;", "RETURN NEW; -- edited by hand"), user="postgres")
    proc = ghostsync_cli(head, "status")
    advice = re.search(r"`ghostsync migrate downgrade (\S+) && ghostsync migrate upgrade (\S+)` reinstalls it",
                       proc.stdout)
    assert proc.returncode == 1 and advice, proc.stdout
    declared_by = chain.declared_at(head.value("SELECT version_num FROM public.alembic_version")).declared_by
    below = chain.script_directory().get_revision(declared_by["ghostsync.handle_new_user()"]).down_revision
    assert advice.groups() == (below, head.value("SELECT version_num FROM public.alembic_version"))
    proc = ghostsync_cli(head, "migrate", "downgrade", advice.group(1))
    assert proc.returncode == 0, proc.stderr
    proc = ghostsync_cli(head, "migrate", "upgrade", advice.group(2))
    assert proc.returncode == 0, proc.stderr
    assert ghostsync_cli(head, "status").returncode == 0


def test_alembic_commands_other_than_upgrade_and_downgrade_run_once(head):
    """The downgrade preflight looks at the plan of commands that name a destination only: `current`
    prints its revision once, and a stamp (whose steps are not revisions) goes through."""
    script = chain.script_directory()
    top = chain.head(script)
    below = script.get_revision(top).down_revision
    proc = ghostsync_cli(head, "migrate", "current")
    assert proc.returncode == 0 and proc.stdout.splitlines() == [f"{top} (head)"], proc.stdout
    proc = ghostsync_cli(head, "migrate", "stamp", below)
    assert proc.returncode == 0, proc.stderr
    assert head.value("SELECT version_num FROM public.alembic_version") == below
    assert ghostsync_cli(head, "migrate", "stamp", "head").returncode == 0


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


def status_into_a_closed_pipe(db, *args):
    """``ghostsync status`` whose standard output is a pipe nobody reads any more (as ``| head -9`` leaves it
    once head has its lines): the read end is closed before the command starts, so every write fails."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "ghostsync", "status", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300,
                              env=dict(os.environ, DATABASE_URL=db.url()))
    finally:
        os.close(write_end)
    return proc


def test_status_into_a_closed_pipe_ends_quietly_with_its_verdict(head):
    for args in ((), ("--json",)):
        proc = status_into_a_closed_pipe(head, *args)
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    head.sql(BREAKAGES["ghost"][0])
    for args in ((), ("--json",)):
        proc = status_into_a_closed_pipe(head, *args)
        assert (proc.returncode, proc.stderr) == (1, ""), proc.stderr


@pytest.mark.parametrize("app_table", [False, True])
def test_the_upgrade_log_says_whether_public_users_was_created_or_adopted(db, app_table):
    if app_table:
        seed_app_with_profiles(db, 1)
    proc = ghostsync_cli(db, "migrate", "upgrade", "head")
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "ghostsync: public.users " in line]
    expected = "public.users adopted: the app's existing table" if app_table else "public.users created"
    assert len(said) == 1 and expected in said[0], proc.stderr
    offline = ghostsync_cli(db, "migrate", "upgrade", "head", "--sql")
    assert offline.returncode == 0 and "public.users created" not in offline.stderr + offline.stdout


def test_the_readmes_removal_takes_ghostsync_out_entirely(db):
    """The README's block, run as written after `downgrade ghostsync@base`: refuses while the triggers are there,
    then drops what the register says ghostsync created (schema ghostsync, the audit log it created, the
    deleted_at column it added), and keeps public.users with every profile."""
    import os
    import subprocess

    from tests.paths import REPO

    readme = (REPO / "README.md").read_text()
    start = readme.index("```sh\npsql \"$DATABASE_URL\" -v ON_ERROR_STOP=1 -1 <<'SQL'\n") + len("```sh\n")
    block = readme[start:readme.index("```\n", start)].replace("psql ", f"{db.server.psql()} ", 1)
    seed_ghosts(db)

    def remove():
        return subprocess.run(["bash", "-c", block], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, DATABASE_URL=db.url()))

    db.upgrade()
    refused = remove()
    assert refused.returncode != 0 and "ghostsync's triggers are still installed" in refused.stderr
    assert db.value("SELECT to_regnamespace('ghostsync') IS NOT NULL")
    assert ghostsync_cli(db, "migrate", "downgrade", "ghostsync@base").returncode == 0
    removed = remove()
    assert removed.returncode == 0, removed.stderr
    assert db.value("SELECT to_regnamespace('ghostsync')") is None
    assert db.value("SELECT to_regclass('public.cleanup_audit_log')") is None
    columns = db.sql("SELECT attname::text FROM pg_attribute WHERE attrelid = 'public.users'::regclass "
                     "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
    assert [c for (c,) in columns] == ["id", "email", "email_verified", "created_at", "updated_at"]
    assert db.value("SELECT count(*) FROM public.users") == 5, "every profile kept"
