"""A streaming hot standby of a throwaway server, made with ``pg_basebackup -R``, on loopback.

``ThrowawayReplica(primary)`` copies a running ``ThrowawayServer`` with
``pg_basebackup -R -X stream`` (a base backup plus ``standby.signal`` and a
``primary_conninfo`` that streams from the primary over 127.0.0.1), then
starts it as a hot standby on a free port of its own: read-only queries
there see the primary's data as replay reaches it, ``pg_is_in_recovery()``
is true, and its ``pg_stat_*`` figures are its own. Databases created on the
primary later (``CREATE DATABASE``) appear on the standby too.

``max_standby_streaming_delay`` (default ``1s`` here, 30s in PostgreSQL) is
how long replay waits for a standby query that conflicts with it before it
cancels that query; tests make recovery conflicts with it deterministically.
``caught_up()`` waits until the standby has replayed everything the primary
had written when it was called.

The initdb defaults of the throwaway server allow replication connections
from 127.0.0.1 (trust); ``wal_level`` is ``replica`` by default. Contract as
``ThrowawayServer``: ``start()`` returns once the standby streams; ``stop()``
stops it and deletes its directory; every wait is bounded.

    primary = start_supabase_server(17)
    with ThrowawayReplica(primary.server) as standby, supabase_database(primary) as db:
        standby.caught_up()
        psycopg2.connect(standby.url(db.name, user="postgres"))
"""

from __future__ import annotations

import atexit
import shutil
import time

import psycopg2

from ghostsync.testing.server import SUPERUSER, ServerError, ThrowawayServer, _free_port


class ThrowawayReplica(ThrowawayServer):
    """A hot standby streaming from ``primary`` (a running ``ThrowawayServer``)."""

    def __init__(self, primary: ThrowawayServer, *, max_standby_streaming_delay: str = "1s") -> None:
        super().__init__(primary.binaries, fast=primary.fast)
        self.primary = primary
        self.max_standby_streaming_delay = max_standby_streaming_delay

    def start(self) -> ThrowawayReplica:
        if self._running:
            return self
        if not self.primary._running:
            raise ServerError("the primary is not running")
        if self.run_as is not None:
            self.root.chmod(0o755)
            shutil.chown(self.root, user=self.run_as)
        self._run(
            "pg_basebackup", "-D", str(self.datadir), "-h", self.primary.host, "-p", str(self.primary.port),
            "-U", SUPERUSER, "-R", "-X", "stream", "-c", "fast", "--no-sync", timeout=300,
        )
        self.port = _free_port()
        self._start_postgres()
        atexit.register(self.stop)
        if not self._streaming(timeout=60):
            log = self.logfile.read_text(errors="replace")[-3000:] if self.logfile.exists() else ""
            self.stop()
            raise ServerError(f"the standby did not start streaming from the primary within 60 s:\n{log}")
        return self

    def _start_postgres(self) -> None:
        options = [
            f"-p {self.port}", "-h 127.0.0.1", f"-k {self.root}",
            "-c max_connections=200", "-c shared_buffers=128MB", "-c hot_standby=on",
            f"-c max_standby_streaming_delay={self.max_standby_streaming_delay}",
            "-c hot_standby_feedback=off",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "120",
            "-o", " ".join(options), "start",
        )
        self._running = True

    def _query(self, dsn: str, sql: str) -> object:
        conn = psycopg2.connect(dsn, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
                return row[0] if row else None
        finally:
            conn.close()

    def _streaming(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._query(self.url(), "SELECT pg_is_in_recovery() AND EXISTS "
                               "(SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')"):
                    return True
            except psycopg2.Error:
                pass
            time.sleep(0.1)
        return False

    def caught_up(self, timeout: float = 60) -> None:
        """Return once the standby has replayed all WAL the primary had written when this was called
        (its insert position: with synchronous_commit off a commit record may not be written out yet)."""
        target = self._query(self.primary.url(), "SELECT pg_current_wal_insert_lsn()::text")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._query(self.url(), f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
                return
            time.sleep(0.05)
        raise ServerError(f"the standby did not replay up to {target} within {timeout:.0f} s")

    def __enter__(self) -> ThrowawayReplica:
        return self.start()


__all__ = ["ThrowawayReplica"]
