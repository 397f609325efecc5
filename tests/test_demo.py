"""`make demo` runs the main job end to end and leaves its own server behind in no form."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


def test_demo_repairs_ghosts_and_stops_its_server():
    proc = subprocess.run([sys.executable, "-m", "ghostsync.testing.demo"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "ghosts: 5" in out
    assert "ghosts: 0, orphans: 0" in out
    assert "audit: job=backfill_ghost_users status=succeeded records_affected=5" in out
    assert "trigger ghostsync_on_auth_user_created on auth.users: enabled" in out
    assert "email=newcomer@example.com email_verified=False" in out
    assert "ghostsync status: HEALTHY" in out
    # the demo's own server, and only it: its data directory is gone and no process still uses it
    datadir = re.search(r"data directory (\S+), port (\d+)", out)
    assert datadir, out
    assert not Path(datadir.group(1)).exists()
    assert processes_mentioning(datadir.group(1)) == []
