"""A throwaway PgBouncer in transaction pool mode, on loopback, in front of a throwaway server.

Hosted Supabase offers a transaction-mode pooler (port 6543): each
transaction may run on a different server connection, so only per-transaction
settings (``SET LOCAL``) hold. ``ThrowawayPgBouncer`` starts Debian's
``pgbouncer`` with a configuration of its own in a temporary directory:
``127.0.0.1`` and a free port, ``pool_mode = transaction``, every database of
the upstream server (``* = host=... port=...``), ``auth_type = trust`` with
an ``auth_file`` naming the roles that may connect (the upstream server
trusts loopback too). PgBouncer refuses to run as root: when the caller is
root it runs as the same unprivileged OS user as the throwaway servers.

Contract: ``start()`` returns once PgBouncer accepts connections;
``stop()`` ends it (SIGTERM, then SIGKILL) and deletes its directory;
leaving the context manager, or the interpreter, stops it too.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ghostsync.testing.server import _free_port, _unprivileged_user

DEFAULT_USERS = ("postgres", "supabase_admin", "supabase_auth_admin")
_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")


class PgBouncerError(RuntimeError):
    """PgBouncer could not be found, started or stopped."""


def find() -> str | None:
    """The pgbouncer binary: ``GHOSTSYNC_PGBOUNCER``, then PATH, then Debian's /usr/sbin; else None."""
    override = os.environ.get("GHOSTSYNC_PGBOUNCER")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("pgbouncer")
    if found:
        return found
    for path in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


def version(binary: str | None = None) -> str | None:
    binary = binary or find()
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


class ThrowawayPgBouncer:
    """One PgBouncer process in transaction mode, listening on 127.0.0.1."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        users: tuple[str, ...] = DEFAULT_USERS,
        pool_mode: str = "transaction",
        pool_size: int = 20,
        max_client_conn: int = 200,
        binary: str | None = None,
    ) -> None:
        found = binary or find()
        if found is None:
            raise PgBouncerError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        self.binary = found
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.users = users
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.host = "127.0.0.1"
        self.port = 0
        self.run_as = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="ghostsync-pgbouncer-"))
        self.ini = self.root / "pgbouncer.ini"
        self.logfile = self.root / "pgbouncer.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        return "\n".join([
            "[databases]",
            f"* = host={self.upstream_host} port={self.upstream_port}",
            "",
            "[pgbouncer]",
            f"listen_addr = {self.host}",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.root / 'userlist.txt'}",
            f"pool_mode = {self.pool_mode}",
            f"default_pool_size = {self.pool_size}",
            f"max_client_conn = {self.max_client_conn}",
            "server_reset_query =",
            "ignore_startup_parameters = extra_float_digits",
            f"logfile = {self.logfile}",
            "",
        ])

    def start(self) -> ThrowawayPgBouncer:
        if self._proc is not None:
            return self
        self.port = _free_port()
        self.ini.write_text(self._config())
        (self.root / "userlist.txt").write_text("".join(f'"{user}" ""\n' for user in self.users))
        self.logfile.touch()
        uid: int | None = None
        gid: int | None = None
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            uid, gid = entry.pw_uid, entry.pw_gid
            for path in (self.root, self.ini, self.root / "userlist.txt", self.logfile):
                shutil.chown(path, user=uid, group=gid)
        self._proc = subprocess.Popen(
            [self.binary, str(self.ini)], cwd=self.root,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, user=uid, group=gid, extra_groups=None if uid is None else [],
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self.logfile.read_text(errors="replace")
                self._proc = None
                raise PgBouncerError(f"pgbouncer exited at start:\n{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise PgBouncerError(f"pgbouncer did not listen on {self.host}:{self.port} within 15 s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # immediate shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> ThrowawayPgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A ``postgresql://`` URL through the pooler (as Supabase's port 6543 URL)."""
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
