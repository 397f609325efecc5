"""A throwaway PostgreSQL server on loopback.

``ThrowawayServer`` runs ``initdb`` into a temporary directory and starts
``postgres`` on 127.0.0.1 with a free port. The bootstrap superuser is
``supabase_admin``, as on Supabase, so the ``postgres`` role can be an ordinary
role. PostgreSQL refuses to run as root: when the caller is root, every server
command runs as an unprivileged OS user through ``runuser``.

Contract: ``start()`` returns once the server accepts connections; ``stop()``
stops it (fast shutdown) and deletes its directory; leaving the context
manager, or the interpreter, stops it too. No process outlives its owner.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from ghostsync.testing.binaries import Binaries

SUPERUSER = "supabase_admin"
RUN_AS_CANDIDATES = ("postgres", "ghostsync-pg")


class ServerError(RuntimeError):
    """The throwaway server could not be started or stopped."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unprivileged_user() -> str | None:
    """The OS user server commands run as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in RUN_AS_CANDIDATES:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    name = RUN_AS_CANDIDATES[-1]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )
    return name


class ThrowawayServer:
    """One PostgreSQL server in a temporary directory, reachable on 127.0.0.1."""

    def __init__(self, binaries: Binaries, *, fast: bool = True) -> None:
        self.binaries = binaries
        self.fast = fast
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.run_as = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix=f"ghostsync-pg{binaries.major}-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        self._bindir = self._reachable_bindir()
        self._running = False

    # -- commands -------------------------------------------------------
    def _command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self._bindir / tool), *args]
        if self.run_as is None:
            return argv
        return ["runuser", "-u", self.run_as, "--", *argv]

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            self._command(tool, *args), capture_output=True, text=True, timeout=timeout,
            cwd=self.root,
        )
        if proc.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise ServerError(
                f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n{log}"
            )

    def _reachable_bindir(self) -> Path:
        """The bin directory, copied somewhere the unprivileged user can read if need be."""
        bindir = self.binaries.bindir
        if self.run_as is None:
            return bindir
        probe = subprocess.run(
            ["runuser", "-u", self.run_as, "--", str(bindir / "postgres"), "--version"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return bindir
        copy = Path(tempfile.gettempdir()) / f"ghostsync-pg{self.binaries.major}-install"
        if not (copy / "bin" / "postgres").exists():
            shutil.copytree(bindir.parent, copy, symlinks=True, dirs_exist_ok=True)
            for path in [copy, *copy.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o555 if path.is_dir() else path.stat().st_mode | 0o444)
        return copy / "bin"

    # -- lifecycle ------------------------------------------------------
    def start(self) -> ThrowawayServer:
        if self._running:
            return self
        if self.run_as is not None:
            self.root.chmod(0o755)
            shutil.chown(self.root, user=self.run_as)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        self.port = _free_port()
        self._start_postgres()
        atexit.register(self.stop)
        return self

    def _start_postgres(self) -> None:
        options = [
            f"-p {self.port}", "-h 127.0.0.1", f"-k {self.root}",
            "-c max_connections=200", "-c shared_buffers=256MB",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
            "-o", " ".join(options), "start",
        )
        self._running = True

    def restart(self) -> None:
        """Fast shutdown, then start again on the same port and data."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        self._running = False
        self._start_postgres()

    def stop_fast(self) -> None:
        """Fast shutdown, keeping the data directory (for fault tests)."""
        if self._running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
            self._running = False

    def start_again(self) -> None:
        if not self._running:
            self._start_postgres()

    def stop(self) -> None:
        if self._running:
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
            except (ServerError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> ThrowawayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------
    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A ``postgresql://`` URL, as Supabase hands them out."""
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{dbname}"

    def psql(self) -> str:
        return str(self._bindir / "psql")
