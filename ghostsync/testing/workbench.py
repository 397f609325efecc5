"""``make db`` / ``make db-stop``: a throwaway Supabase-like database to work on by hand.

``python -m ghostsync.testing.workbench start [--pg 17] [--roles hosted] [--name workbench]``
starts a PostgreSQL server on 127.0.0.1 (a free port) whose cluster and
database look like Supabase's (the roles, the ``auth`` schema and
``auth.users``, the grants: what the test suite runs on), prints its URLs,
and runs in the foreground until Ctrl-C (or SIGTERM), which stops the server
and deletes it.

It records what it started in a state file (``GHOSTSYNC_WORKBENCH_STATE``,
default ``<tmp>/ghostsync-workbench-<uid>.json``). If the process is killed
and cannot clean up, the server goes on running:
``python -m ghostsync.testing.workbench stop`` (``make db-stop``) reads the
state file, stops that server and deletes its directory. One workbench runs
per state file at a time.

Loopback only; nothing is installed; the server's data lives in a temporary
directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

from ghostsync.testing import binaries
from ghostsync.testing.authservice import AUTH_ROLE
from ghostsync.testing.server import SUPERUSER, ThrowawayServer
from ghostsync.testing.supabase import (
    DEFAULT_ROLE_SETUP,
    ROLE_SETUPS,
    grant_database_privileges,
    make_cluster_supabase_like,
    make_database_supabase_like,
)

STATE_ENV = "GHOSTSYNC_WORKBENCH_STATE"
MIGRATING_ROLE = "postgres"


def hints() -> dict[str, str]:
    """The commands to print: the checkout's (``make``, ``.venv/bin``), or a pip install's."""
    from ghostsync.generator import installed_location

    if installed_location(Path(__file__)):
        return {"then": "ghostsync migrate upgrade head && ghostsync status",
                "stop": "python -m ghostsync.testing.workbench stop"}
    return {"then": ".venv/bin/ghostsync migrate upgrade head && .venv/bin/ghostsync status",
            "stop": "make db-stop"}


def state_path() -> Path:
    given = os.environ.get(STATE_ENV)
    if given:
        return Path(given)
    return Path(tempfile.gettempdir()) / f"ghostsync-workbench-{os.getuid()}.json"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_workbench(pid: int | None) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ghostsync.testing.workbench" in cmdline


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_gone(pid: int | None, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def remove_leftover(state: dict[str, Any]) -> None:
    """Stop the server a state file names (pg_ctl, then signals) and delete its directory."""
    root, datadir = Path(state["root"]), Path(state["datadir"])
    postmaster = _postmaster_pid(datadir)
    if postmaster is not None and _alive(postmaster):
        pg_ctl = Path(state["bindir"]) / "pg_ctl"
        argv = [str(pg_ctl), "-D", str(datadir), "-m", "immediate", "-w", "-t", "30", "stop"]
        if state.get("run_as"):
            argv = ["runuser", "-u", state["run_as"], "--", *argv]
        if pg_ctl.exists():
            subprocess.run(argv, capture_output=True, timeout=60)
        if not _wait_gone(postmaster, 10):
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                try:
                    os.kill(postmaster, sig)
                except ProcessLookupError:
                    break
                if _wait_gone(postmaster, 10):
                    break
    shutil.rmtree(root, ignore_errors=True)


def stop() -> int:
    path = state_path()
    if not path.exists():
        print(f"no workbench to stop (no {path})")
        return 0
    state = json.loads(path.read_text())
    owner = state.get("pid")
    if _alive(owner) and _is_workbench(owner):
        os.kill(owner, signal.SIGTERM)  # it stops its own server and removes the state file
        _wait_gone(owner, 60)
    remove_leftover(state)
    path.unlink(missing_ok=True)
    print(f"workbench stopped: {state['url']} removed")
    return 0


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _binaries(major: int) -> binaries.Binaries:
    found = binaries.find(major)
    if found is None and major in binaries.FETCHABLE:
        binaries.fetch(major)
        found = binaries.find(major)
    if found is None:
        raise SystemExit(f"workbench: no PostgreSQL {major} binaries on this machine (try --pg 17: `make db` "
                         "installs them with the testing extra)")
    return found


def start(major: int, roles: str, name: str) -> int:
    path = state_path()
    if path.exists():
        state = json.loads(path.read_text())
        if _alive(state.get("pid")) and _is_workbench(state.get("pid")):
            print(f"workbench: one is running already ({state['url']}, pid {state['pid']}): use it, or "
                  f"`{hints()['stop']}`", file=sys.stderr)
            return 1
        remove_leftover(state)  # a killed workbench's server
        path.unlink(missing_ok=True)
    found = _binaries(major)
    # Ctrl-C, also where the shell started us with SIGINT ignored (in the background); kill; hang-up
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    server = ThrowawayServer(found)
    try:
        server.start()
        make_cluster_supabase_like(server.url(), roles)
        admin = psycopg2.connect(server.url())
        try:
            admin.autocommit = True
            admin.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        make_database_supabase_like(server.url(name), roles)
        grant_database_privileges(server.url(name))
        url = server.url(name, user=MIGRATING_ROLE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "pid": os.getpid(), "url": url, "root": str(server.root), "datadir": str(server.datadir),
            "bindir": str(server._bindir), "run_as": server.run_as, "major": found.major,
        }, indent=2))
        print(f"ghostsync workbench: PostgreSQL {found.major} ({found.source}), Supabase-like (roles: {roles}), "
              f"database {name}", flush=True)
        print(f"  export DATABASE_URL={url}", flush=True)
        print(f"  auth service's role: {server.url(name, user=AUTH_ROLE)}", flush=True)
        print(f"  superuser:           {server.url(name, user=SUPERUSER)}", flush=True)
        print(f"  then: {hints()['then']}", flush=True)
        print(f"Ctrl-C stops and deletes it (state: {path}; after a kill: {hints()['stop']})", flush=True)
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, _Stop):
        print("\nworkbench: stopping", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            state = json.loads(path.read_text()) if path.exists() else {}
            if state.get("pid") == os.getpid():
                path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ghostsync.testing.workbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start a throwaway Supabase-like database; run until Ctrl-C")
    p.add_argument("--pg", type=int, default=17, help="PostgreSQL major version (default 17)")
    p.add_argument("--roles", choices=ROLE_SETUPS, default=DEFAULT_ROLE_SETUP,
                   help=f"Supabase's role setup (default {DEFAULT_ROLE_SETUP}: today's hosted Supabase)")
    p.add_argument("--name", default="workbench", help="the database's name (default workbench)")
    sub.add_parser("stop", help="stop and remove a workbench a kill left behind")
    args = parser.parse_args(argv)
    if args.command == "start":
        return start(args.pg, args.roles, args.name)
    return stop()


if __name__ == "__main__":
    raise SystemExit(main())
