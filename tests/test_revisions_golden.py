"""Revisions are frozen history: what each one does, offline and online, is pinned by golden SQL files.

``tests/data/golden/`` holds, for every revision of ghostsync's branch:

- ``offline/<revision>.upgrade.sql`` / ``.downgrade.sql``: the ``--sql`` text of the revision alone;
- ``online/<revision>.upgrade.sql`` / ``.downgrade.sql``: every statement the revision sends to a
  real throwaway database (through the kit, in order, with its parameters), on a database seeded
  with accounts of fixed ids, so the data jobs of 0003 and 0009 walk batches;
- ``online/<revision>.busy.sql`` for the data jobs: the same job on a database where one account
  stays locked (FOR UPDATE) and a dead run is left ``running``: the lock bound each batch sends,
  each retry, the mark of the dead run, the failed finish.
- ``online/ghostsync_0003.refused.sql``: 0003 where the app's table refuses one profile (a CHECK) and
  swallows another (a BEFORE INSERT trigger returning NULL): the row-by-row path and the partial finish.

The settings are fixed below (``X_ARGS``): the deploy's policy (``-x`` values and their defaults)
is deliberately not pinned, what a revision does with them is. Only what must vary is normalised:
a transaction id (the sweep's horizon) and the virtual transaction ids of open writers.

A change to the kit or the job runner that changes what an old revision does fails here, with
the diff. A new revision (or one whose change is intended, while ghostsync is unreleased: delete
its files first) gets its files with::

    GHOSTSYNC_PIN_NEW_REVISIONS=1 .venv/bin/python -m pytest tests/test_revisions_golden.py

which writes the files that are missing and never rewrites an existing one.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import threading
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from alembic import command
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ghostsync import chain
from ghostsync.migrations import kit, register
from ghostsync.testing.fixtures import SupabaseDatabase

GOLDEN = Path(__file__).parent / "data" / "golden"
RENEW = "GHOSTSYNC_PIN_NEW_REVISIONS"
X = {"lock_timeout": "400ms", "lock_retries": "20", "lock_backoff": "100ms", "statement_timeout": "60s",
     "batch_size": "2", "dead_after": "60s", "progress_interval": "10s", "writers_wait": "60s"}
# The busy job: a short bound and few retries, so the lock that never comes free ends it quickly.
BUSY_X = {**X, "lock_timeout": "50ms", "lock_retries": "2", "lock_backoff": "10ms"}
JOBS = ("ghostsync_0003", "ghostsync_0009")

# Accounts of fixed ids (no trigger yet: every one a ghost when 0003 runs); 0009 finds one stale.
SEED = """
INSERT INTO auth.users (id, email, email_confirmed_at, created_at, updated_at)
SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'seed' || n || '@example.com',
       CASE WHEN n % 2 = 0 THEN timestamptz '2026-01-01 00:00:00+00' END,
       timestamptz '2026-01-01 00:00:00+00', timestamptz '2026-01-01 00:00:00+00'
FROM generate_series(1, 5) AS n
"""
LOCKED_ID = "00000000-0000-4000-8000-000000000003"


def revisions() -> list[Any]:
    script = chain.script_directory()
    return list(chain.path_to(script, chain.head(script)))


def compare(path: Path, found: str) -> None:
    """``found`` must equal the golden file at ``path``; a missing file is written under RENEW."""
    if not path.exists():
        if os.environ.get(RENEW) == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(found)
            return
        pytest.fail(f"no golden file {path.relative_to(GOLDEN.parent.parent)}: write it with {RENEW}=1")
    pinned = path.read_text()
    if found != pinned:
        diff = "".join(difflib.unified_diff(pinned.splitlines(True), found.splitlines(True), "golden", "now", n=2))
        pytest.fail(f"{path.name}: the revision no longer does what it did when it was pinned (revisions are "
                    "frozen: change behaviour with a new revision, never what the kit does for an old one)\n"
                    + diff[:6000], pytrace=False)


# -- offline ------------------------------------------------------------------------------------------

def offline(target: str, *, down: bool = False) -> str:
    buffer = io.StringIO()
    config = chain.alembic_config()
    config.output_buffer = buffer
    config.cmd_opts = Namespace(x=[f"{k}={v}" for k, v in X.items()])
    (command.downgrade if down else command.upgrade)(config, target, sql=True)
    return buffer.getvalue()


@pytest.mark.parametrize("rev", revisions(), ids=lambda r: r.revision)
def test_offline_sql_is_pinned(rev: Any) -> None:
    below = rev.down_revision or "base"
    up = offline(f"{below}:{rev.revision}" if rev.down_revision else rev.revision)
    compare(GOLDEN / "offline" / f"{rev.revision}.upgrade.sql", up)
    compare(GOLDEN / "offline" / f"{rev.revision}.downgrade.sql", offline(f"{rev.revision}:{below}", down=True))


# -- online -------------------------------------------------------------------------------------------

class Capture:
    """The statements sent while a revision is inside a kit (or register) operation, normalised."""

    def __init__(self) -> None:
        self.depth = 0
        self.lines: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> None:
        if self.depth > 0:
            self.lines.append(render(statement, parameters))

    def take(self) -> str:
        text, self.lines = "".join(self.lines), []
        return text or "-- nothing sent\n"

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(function)
        def inside(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            try:
                return function(*args, **kwargs)
            finally:
                self.depth -= 1
        return inside


def render(statement: str, parameters: Any) -> str:
    params = dict(parameters) if isinstance(parameters, dict) else parameters
    if isinstance(params, dict):
        if "horizon" in params:
            params["horizon"] = "<xid>"
        if "writers" in params:
            params["writers"] = ["<vxid>"] * len(params["writers"])
    shown = "" if not params else f"-- params: {params!r}\n"
    return f"{shown}{statement.strip()};\n\n"


@contextmanager
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    """Every public operation of the kit and of ``register`` records the statements sent inside it."""
    capture = Capture()
    for module in (kit, register):
        for name, value in list(vars(module).items()):
            if callable(value) and getattr(value, "__module__", None) == module.__name__ \
                    and not name.startswith("_") and not isinstance(value, type):
                monkeypatch.setattr(module, name, capture.wrap(value))
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        yield capture
    finally:
        event.remove(Engine, "before_cursor_execute", capture)


def migrate(db: SupabaseDatabase, target: str, *, down: bool = False, **x: str) -> None:
    config = db.alembic_config(**x)
    with db.only_here():
        (command.downgrade if down else command.upgrade)(config, target)


def test_online_statements_are_pinned(db: SupabaseDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each revision up from base to head, then each down to base, on one database."""
    db.sql(SEED, user="postgres")
    revs = revisions()
    with captured(monkeypatch) as capture:
        found = {}
        for rev in revs:
            if rev.revision == "ghostsync_0009":
                # one stale profile for the resync to rewrite
                db.sql("UPDATE public.users SET email = 'stale@example.com' WHERE id = %s", (LOCKED_ID,))
            migrate(db, rev.revision, **X)
            found[f"{rev.revision}.upgrade.sql"] = capture.take()
        for rev in reversed(revs):
            migrate(db, rev.down_revision or "base", down=True, **X)
            found[f"{rev.revision}.downgrade.sql"] = capture.take()
    for name, text in found.items():
        compare(GOLDEN / "online" / name, text)


@pytest.mark.parametrize("job", JOBS)
def test_online_job_path_is_pinned(db: SupabaseDatabase, monkeypatch: pytest.MonkeyPatch, job: str) -> None:
    """A data job on a database where one account stays locked: every batch bounds its own lock
    wait, a busy batch is tried again ``lock_retries`` times, a dead ``running`` run is marked
    interrupted first, and the run is closed as failed (55P03)."""
    db.sql(SEED, user="postgres")
    below = next(rev.down_revision for rev in revisions() if rev.revision == job)
    migrate(db, below, **X)
    if job == "ghostsync_0009":
        db.sql("UPDATE public.users SET email = 'stale@example.com' WHERE id = %s", (LOCKED_ID,))
    job_name = {"ghostsync_0003": "backfill_ghost_users", "ghostsync_0009": "resync_profiles"}[job]
    db.sql("INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details) "
           "VALUES (%s, 'running', 0, now() - interval '1 hour', jsonb_build_object('pid', 0))", (job_name,))
    holder = psycopg2.connect(db.url("postgres"))
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM auth.users WHERE id = %s FOR UPDATE", (LOCKED_ID,))
        with captured(monkeypatch) as capture:
            failure: list[BaseException] = []
            runner = threading.Thread(target=lambda: _expect_failure(db, job, failure), daemon=True)
            runner.start()
            runner.join(timeout=120)
            assert not runner.is_alive(), "the job waited on the held lock past its bound"
            text = capture.take()
    finally:
        holder.rollback()
        holder.close()
    assert failure and ("55P03" in str(failure[0]) or "lock timeout" in str(failure[0])), failure
    compare(GOLDEN / "online" / f"{job}.busy.sql", text)


# The app's rules on the profile table that 0003 meets row by row: a CHECK that refuses one profile
# (the batch fails: its ghosts by id, halved around that row) and a BEFORE INSERT trigger that swallows
# another (no error: every ghost left is taken once more by id at the end).
APP_RULES = """
ALTER TABLE public.users ADD CONSTRAINT app_rule CHECK (email IS DISTINCT FROM 'seed3@example.com');
CREATE FUNCTION public.app_skip() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RETURN CASE WHEN NEW.email = 'seed5@example.com' THEN NULL ELSE NEW END;
END
$$;
CREATE TRIGGER app_skip BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.app_skip();
"""


def test_online_row_by_row_path_is_pinned(db: SupabaseDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """0003 where the app's table refuses one profile and swallows another: the batch that fails, its
    ghosts written by id and halved, each refused row recorded, the leftovers taken by id, the partial finish."""
    db.sql(SEED, user="postgres")
    migrate(db, "ghostsync_0002", **X)
    db.sql(APP_RULES, user="postgres")
    with captured(monkeypatch) as capture:
        migrate(db, "ghostsync_0003", **X)
        text = capture.take()
    assert db.value("SELECT status FROM public.cleanup_audit_log WHERE job_name = 'backfill_ghost_users'") == "partial"
    compare(GOLDEN / "online" / "ghostsync_0003.refused.sql", text)


def _expect_failure(db: SupabaseDatabase, job: str, failure: list[BaseException]) -> None:
    try:
        migrate(db, job, **BUSY_X)
    except BaseException as exc:  # the job's 55P03, as the upgrade raises it
        failure.append(exc)


def test_normalising_keeps_what_a_revision_decides() -> None:
    """Only the transaction ids are blanked; a changed bound or batch size shows."""
    assert render("SELECT 1", {"horizon": "123", "lock_timeout": "400ms"}) == \
        "-- params: {'horizon': '<xid>', 'lock_timeout': '400ms'}\nSELECT 1;\n\n"
    assert re.search(r"'batch_size': 2", render("x", {"batch_size": 2}))
