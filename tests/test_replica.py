"""Status from a read replica: a streaming hot standby started by the harness (pg_basebackup -R, loopback).

- ``ghostsync status`` (full and quick) runs read-only on the standby and,
  once it has caught up, reports exactly what the primary reports: ghosts,
  orphans, failed syncs, stale profiles, triggers, functions, revision,
  problems and warnings; only ``standby`` differs, and the ``pg_stat_*``
  figures, which are per server, are null there (absent from the textfile).
- A status query that a recovery conflict cancels ends with one line and
  exit 2 (and an ``up 0`` textfile). The conflict is made deterministic: the
  primary holds an ACCESS EXCLUSIVE lock that replay takes on the standby, so
  status waits there holding a lock of its own; then the primary locks that
  table too and replay cancels status (``max_standby_streaming_delay`` 1s).
- backfill, repair and migrate refuse the standby with one line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghostsync.testing.fixtures import start_supabase_server, supabase_database
from ghostsync.testing.replica import ThrowawayReplica
from tests.loadcheck import env_for, ghostsync_argv, reap, wait_until
from tests.paths import REPO
from tests.seeding import ghostsync_cli, seed_ghosts

PER_SERVER_COUNTERS = ("auth_users_inserted", "auth_users_deleted", "profiles_inserted", "failed_profile_writes",
                       "track_functions", "trigger_calls", "trigger_seconds")


@pytest.fixture(scope="module")
def replicated(pg):
    """A Supabase-like primary of this module's own, and a hot standby streaming from it."""
    primary = start_supabase_server(pg.major)
    try:
        standby = ThrowawayReplica(primary.server, max_standby_streaming_delay="1s").start()
        try:
            yield primary, standby
        finally:
            standby.stop()
    finally:
        primary.server.stop()


@pytest.fixture
def pair(replicated):
    primary, standby = replicated
    with supabase_database(primary) as db:
        seed_ghosts(db)
        db.upgrade()
        standby.caught_up()
        yield db, standby


def standby_url(db: Any, standby: ThrowawayReplica, user: str = "postgres") -> str:
    return standby.url(db.name, user=user)


def status_json(db: Any, *args: str, url: str | None = None) -> tuple[int, dict[str, Any]]:
    proc = ghostsync_cli(db, "status", "--json", *args, url=url)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def comparable(found: dict[str, Any]) -> dict[str, Any]:
    """What must be equal on the primary and the standby (everything but where it ran and per-server stats)."""
    return {k: v for k, v in found.items() if k not in ("standby", "counters")}


def break_everything(db: Any) -> None:
    """One of each problem status counts, made on the primary."""
    db.sql("SET session_replication_role = replica; "
           "INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at) VALUES "
           "('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', "
           "'restored@example.com', now(), now())")
    db.sql("SET session_replication_role = replica; INSERT INTO public.users (id, email) "
           "VALUES (gen_random_uuid(), 'orphan@example.com')")
    db.sql("INSERT INTO ghostsync.sync_failures (user_id, operation, sqlstate, message) "
           "VALUES (gen_random_uuid(), 'INSERT', '23514', 'new row violates check constraint')")
    db.sql("SET session_replication_role = replica; UPDATE auth.users SET email = 'changed@example.com' "
           "WHERE id = (SELECT id FROM auth.users WHERE email LIKE 'ghost.confirmed%%')")
    db.sql("ALTER TABLE auth.users DISABLE TRIGGER ghostsync_on_auth_user_updated")
    source = db.value("SELECT pg_get_functiondef('ghostsync.handle_new_user()'::regprocedure)")
    db.sql(source.replace("RETURN NEW;", "RETURN NEW; -- edited by hand"), user="postgres")


@pytest.mark.parametrize("mode", ["full", "quick"])
def test_status_on_a_standby_reports_what_the_primary_reports(pair, mode, tmp_path):
    db, standby = pair
    args = ["--quick"] if mode == "quick" else []
    for state in ("healthy", "broken"):
        if state == "broken":
            break_everything(db)
            standby.caught_up()
        primary_code, on_primary = status_json(db, *args)
        standby_code, on_standby = status_json(db, *args, url=standby_url(db, standby))
        assert (on_primary["standby"], on_standby["standby"]) == (False, True)
        assert standby_code == primary_code, (state, on_standby["problems"])
        assert comparable(on_standby) == comparable(on_primary), state
        assert all(on_standby["counters"][key] is None for key in PER_SERVER_COUNTERS), on_standby["counters"]
        assert on_primary["counters"]["auth_users_inserted"] is not None
    codes = {p["code"] for p in on_standby["problems"]}
    expected = {"failed_syncs", "trigger_disabled", "function_drift"}
    if mode == "full":
        expected |= {"ghosts", "orphans", "stale_profiles"}
        assert (on_standby["ghosts"], on_standby["orphans"], on_standby["stale_profiles"]) == (1, 1, 1)
    assert codes == expected, codes
    assert on_standby["revision"] == on_primary["head"]

    text = ghostsync_cli(db, "status", *args, url=standby_url(db, standby))
    assert text.returncode == 1 and f"({mode} check, hot standby)" in text.stdout, text.stdout
    assert "not read on a hot standby" in text.stdout
    target = tmp_path / f"ghostsync-{mode}.prom"
    assert ghostsync_cli(db, "status", *args, "--prometheus", str(target), url=standby_url(db, standby)).returncode == 1
    metrics = {(s.name, s.labels.get("code")): s.value
               for family in text_string_to_metric_families(target.read_text()) for s in family.samples}
    assert metrics[("ghostsync_standby", None)] == 1 and metrics[("ghostsync_up", None)] == 1
    assert metrics[("ghostsync_problem", "trigger_disabled")] == 1
    assert not [name for name, _ in metrics if name.endswith("_total")], "no per-server counter from a standby"


def test_a_recovery_conflict_ends_status_with_one_line(pair, tmp_path):
    db, standby = pair
    holders = [psycopg2.connect(db.url("supabase_admin")) for _ in range(2)]
    proc = None
    target = tmp_path / "ghostsync-full.prom"
    try:
        # 1. the primary holds ACCESS EXCLUSIVE on the failure ledger; replay takes it on the standby
        with holders[0].cursor() as cur:
            cur.execute("LOCK TABLE ghostsync.sync_failures IN ACCESS EXCLUSIVE MODE")
        replayed = wait_until(lambda: standby_value(
            db, standby, "SELECT count(*) FROM pg_locks WHERE relation = 'ghostsync.sync_failures'::regclass "
            "AND mode = 'AccessExclusiveLock' AND granted"), timeout=30)
        assert replayed, "replay never took the primary's lock on the standby"
        # 2. status on the standby reads alembic_version (and keeps its lock), then waits for the ledger
        proc = subprocess.Popen(ghostsync_argv("status", "--json", "--prometheus", str(target)), cwd=REPO,
                                env=env_for(standby_url(db, standby)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        waiting = wait_until(lambda: standby_value(
            db, standby, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ghostsync-status' "
            "AND wait_event_type = 'Lock'") or proc.poll() is not None, timeout=30)
        assert waiting is not True and waiting, "status never waited on the standby"
        # 3. the primary locks alembic_version: replay must take it from status, and cancels status
        began = time.monotonic()
        with holders[1].cursor() as cur:
            cur.execute("LOCK TABLE public.alembic_version IN ACCESS EXCLUSIVE MODE")
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - began
    finally:
        for holder in holders:
            holder.rollback()
            holder.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            reap(proc)
    assert proc.returncode == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghostsync: ") and "Traceback" not in err, err
    assert "conflict with recovery" in lines[0] and "hot standby" in lines[0], lines[0]
    failure = json.loads(out)
    assert (failure["schema_version"], failure["up"]) == (2, False)
    assert failure["error"]["message"] in lines[0]
    metrics = {s.name: s.value for family in text_string_to_metric_families(target.read_text())
               for s in family.samples}
    assert metrics["ghostsync_up"] == 0
    assert took < 30, f"replay cancelled status only after {took:.1f} s"
    # once the primary's transactions are over, the same check runs on the standby
    standby.caught_up()
    assert ghostsync_cli(db, "status", url=standby_url(db, standby)).returncode == 0
    assert failure["error"]["code"] == "cancelled", failure


def standby_value(db: Any, standby: ThrowawayReplica, sql: str) -> Any:
    conn = psycopg2.connect(standby_url(db, standby, "supabase_admin"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("command", [
    ("backfill",), ("repair",), ("migrate", "upgrade", "head"), ("migrate", "downgrade", "base"),
    ("migrate", "downgrade", "-1"),
])
def test_writing_commands_refuse_a_standby(pair, command):
    db, standby = pair
    version = db.value("SELECT version_num FROM public.alembic_version")
    proc = ghostsync_cli(db, *command, url=standby_url(db, standby))
    out = proc.stdout + proc.stderr
    said = [line for line in out.splitlines() if line.startswith(("ghostsync: ", "FAILED: "))]
    assert proc.returncode != 0, out
    assert len(said) == 1 and "standby" in said[0], out
    assert "Traceback" not in out
    assert "run the same command again" not in said[0], "a standby does not become writable by retrying"
    standby.caught_up()
    assert db.value("SELECT version_num FROM public.alembic_version") == version
    assert standby_value(db, standby, "SELECT version_num FROM public.alembic_version") == version


def test_the_harness_replica_is_a_streaming_hot_standby(pair):
    db, standby = pair
    assert standby_value(db, standby, "SELECT pg_is_in_recovery()") is True
    assert standby_value(db, standby, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    db.sql("CREATE TABLE public.replicated_probe (n int); INSERT INTO public.replicated_probe VALUES (42)")
    standby.caught_up()
    assert standby_value(db, standby, "SELECT n FROM public.replicated_probe") == 42
    with pytest.raises(psycopg2.Error, match="read-only"):
        standby_value(db, standby, "INSERT INTO public.replicated_probe VALUES (1) RETURNING n")
    assert Path(standby.datadir / "standby.signal").exists()
