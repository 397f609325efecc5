"""`make demo` runs the main job end to end and leaves no server behind."""

from __future__ import annotations

import subprocess
import sys

from tests.paths import REPO


def postgres_processes() -> set[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if "ghostsync-pg" in line and "postgres" in line}


def test_demo_repairs_ghosts_and_stops_its_server():
    before = postgres_processes()
    proc = subprocess.run([sys.executable, "-m", "ghostsync.testing.demo"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "ghosts: 5" in out
    assert "ghosts: 0, orphans: 0" in out
    assert "audit: job=backfill_ghost_users status=succeeded records_affected=5" in out
    assert "trigger on_auth_user_created: exists=True enabled=True" in out
    assert "email=newcomer@example.com email_verified=False" in out
    assert postgres_processes() == before
