"""The load generators: bounded in requests and time, every request recorded with its kind,
start, latency and error; AuthLoad mixes signups, sign-ins and token refreshes."""

from __future__ import annotations

import time

import psycopg2

from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.loadgen import AuthLoad, LoadReport, Request, Signup, SignupLoad


def test_signup_load_still_signs_users_up(db):
    with SignupLoad(db.url(AUTH_ROLE), clients=2, max_signups=40, deadline_s=30) as load:
        deadline = time.monotonic() + 30
        while load.running and time.monotonic() < deadline:
            load.wait(0.1)
    report = load.report
    assert Signup is Request
    assert report.attempted == 40 and report.failed == 0
    assert report.kinds == {"signup": 40}
    assert db.value("SELECT count(*) FROM auth.users WHERE id = ANY(%s::uuid[])", (report.succeeded_ids,)) == 40
    assert db.value("SELECT count(*) FROM auth.users WHERE is_anonymous") == 4
    assert db.value("SELECT count(*) FROM auth.users WHERE phone IS NOT NULL") == 4
    assert "signups 40 attempted, 0 failed" in report.summary()


def test_auth_load_mixes_sign_ins_and_refreshes(db):
    with AuthLoad(db.url(AUTH_ROLE), signups=2, sign_ins=1, refreshes=1, clients=3, max_requests=120,
                  deadline_s=60) as load:
        deadline = time.monotonic() + 60
        while load.running and time.monotonic() < deadline:
            load.wait(0.1)
    report = load.report
    assert report.attempted == 120 and report.failed == 0, report.summary()
    kinds = report.kinds
    assert set(kinds) == {"signup", "sign_in", "refresh"}
    assert kinds["signup"] >= 60 and kinds["refresh"] > 0 and kinds["sign_in"] > 0
    assert all(r.latency_s >= 0 and r.started >= report.began - 30 for r in report.requests)
    assert isinstance(report.only("refresh"), LoadReport) and report.only("refresh").attempted == kinds["refresh"]
    signed_up = [r.user_id for r in report.requests if r.kind == "signup"]
    assert db.value("SELECT count(*) FROM auth.users WHERE id = ANY(%s::uuid[])", (signed_up,)) == len(signed_up)
    sessions = db.value("SELECT count(*) FROM auth.sessions")
    assert sessions == kinds["sign_in"]  # the signups leave their session transaction to the sign-ins
    assert db.value("SELECT count(*) FROM auth.refresh_tokens WHERE parent IS NOT NULL") == kinds["refresh"]
    assert db.value("SELECT count(*) FROM auth.refresh_tokens WHERE revoked") == kinds["refresh"]
    assert "refresh" in report.summary() and "sign_in" in report.summary()


def test_auth_load_is_bounded_in_time_and_records_errors(db):
    db.sql("CREATE FUNCTION public.slow_boom() RETURNS trigger LANGUAGE plpgsql AS "
           "$$BEGIN PERFORM pg_sleep(0.05); RAISE EXCEPTION 'no sign-ins today'; END$$; "
           "CREATE TRIGGER slow_boom AFTER UPDATE OF last_sign_in_at ON auth.users "
           "FOR EACH ROW EXECUTE FUNCTION public.slow_boom()")
    began = time.monotonic()
    load = AuthLoad(db.url(AUTH_ROLE), signups=1, sign_ins=1, refreshes=0, clients=2, max_requests=100_000,
                    deadline_s=1.5)
    load.start()
    load.wait(10)
    report = load.stop()
    assert time.monotonic() - began < 15
    assert 0 < report.attempted < 100_000
    failed = [r for r in report.requests if not r.ok]
    assert failed and all(r.kind == "sign_in" for r in failed)
    assert {r.sqlstate for r in failed} == {"P0001"}
    assert all(r.error == "no sign-ins today" for r in failed)
    assert report.only("signup").failed == 0


def test_auth_load_survives_a_dropped_connection(db):
    with AuthLoad(db.url(AUTH_ROLE), signups=1, sign_ins=1, refreshes=1, clients=2, max_requests=400,
                  deadline_s=20, pause_s=0.01) as load:
        load.wait(0.3)
        db.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> "
               "pg_backend_pid()", (AUTH_ROLE,))
        deadline = time.monotonic() + 30
        while load.running and time.monotonic() < deadline:
            load.wait(0.1)
    report = load.report
    assert report.attempted == 400
    broken = [r for r in report.requests if not r.ok]
    assert len(broken) <= 2  # at most the request each client had in flight
    assert report.reconnects <= load.max_reconnects
    conn = psycopg2.connect(db.url(AUTH_ROLE))
    conn.close()
