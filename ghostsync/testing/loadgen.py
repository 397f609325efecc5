"""A signup load generator: several clients signing users up the way the auth service does.

Each client is a thread with its own connection as ``supabase_auth_admin``
(``AuthService``): one signup is one transaction, an INSERT into
``auth.users`` then an UPDATE of the same row, committed. The generator
records, for every signup, when it started, how long it took and, when it
failed, the SQLSTATE and the first line of the error.

Bounded: the load stops at ``max_signups`` signups in all, at ``deadline_s``
seconds after ``start()``, or at ``stop()``, whichever comes first; a client
whose connection breaks reconnects at most ``max_reconnects`` times. Loopback
only: the DSN is whatever the caller passes (the tests pass 127.0.0.1).

    with SignupLoad(db.url("supabase_auth_admin"), clients=4, max_signups=2000, deadline_s=60) as load:
        ... run the migration ...
    report = load.report
    assert report.failed == 0
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import psycopg2

from ghostsync.testing.authservice import AuthService


@dataclass(frozen=True)
class Signup:
    """One signup attempt: start (time.monotonic), latency, and the error if it failed."""

    client: int
    started: float
    latency_s: float
    user_id: str
    sqlstate: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class LoadReport:
    """What a load run did; every figure comes from ``signups``."""

    signups: list[Signup] = field(default_factory=list)
    began: float = 0.0
    ended: float = 0.0
    reconnects: int = 0

    @property
    def attempted(self) -> int:
        return len(self.signups)

    @property
    def failed(self) -> int:
        return sum(1 for s in self.signups if not s.ok)

    @property
    def succeeded_ids(self) -> list[str]:
        return [s.user_id for s in self.signups if s.ok]

    @property
    def errors(self) -> Counter[tuple[str | None, str | None]]:
        return Counter((s.sqlstate, s.error) for s in self.signups if not s.ok)

    def latencies(self, start: float | None = None, end: float | None = None) -> list[float]:
        """Latencies of the signups that were in flight at some time in [start, end]."""
        return sorted(
            s.latency_s for s in self.signups
            if (start is None or s.started + s.latency_s >= start) and (end is None or s.started <= end)
        )

    def longest_stall_s(self, start: float | None = None, end: float | None = None) -> float:
        found = self.latencies(start, end)
        return found[-1] if found else 0.0

    def percentile_s(self, pct: float) -> float:
        found = self.latencies()
        if not found:
            return 0.0
        return found[min(len(found) - 1, round(pct / 100 * (len(found) - 1)))]

    def in_window(self, start: float, end: float) -> int:
        """Signups in flight at some time in [start, end]."""
        return len(self.latencies(start, end))

    def summary(self) -> str:
        line = (f"signups {self.attempted} attempted, {self.failed} failed; longest stall "
                f"{self.longest_stall_s() * 1000:.0f} ms (p50 {self.percentile_s(50) * 1000:.0f} ms, "
                f"p99 {self.percentile_s(99) * 1000:.0f} ms) over {self.ended - self.began:.1f} s")
        if self.errors:
            line += "; errors: " + ", ".join(f"{n}x {state} {msg}" for (state, msg), n in self.errors.items())
        return line


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SignupLoad:
    """``clients`` threads signing users up until stopped, ``max_signups`` or ``deadline_s``."""

    def __init__(
        self,
        dsn: str,
        *,
        clients: int = 4,
        max_signups: int = 2000,
        deadline_s: float = 60.0,
        pause_s: float = 0.005,
        max_reconnects: int = 50,
        tag: str | None = None,
    ) -> None:
        if clients < 1 or max_signups < 1 or deadline_s <= 0:
            raise ValueError("clients, max_signups and deadline_s must be positive")
        self.dsn = dsn
        self.clients = clients
        self.max_signups = max_signups
        self.deadline_s = deadline_s
        self.pause_s = pause_s
        self.max_reconnects = max_reconnects
        self.tag = tag or uuid.uuid4().hex[:8]
        self.report = LoadReport()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._issued = 0
        self._threads: list[threading.Thread] = []
        self._ready = threading.Barrier(clients + 1)
        self._deadline = 0.0

    # -- lifecycle ------------------------------------------------------
    def start(self) -> SignupLoad:
        self._deadline = time.monotonic() + self.deadline_s
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), name=f"signup-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        with contextlib.suppress(threading.BrokenBarrierError):
            self._ready.wait(timeout=30)  # every client connected (or given up)
        self.report.began = time.monotonic()
        return self

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(5.0, self._deadline - time.monotonic() + 5.0))
        self.report.ended = time.monotonic()
        self.report.signups.sort(key=lambda s: s.started)
        return self.report

    def wait(self, seconds: float) -> None:
        """Let the load run for ``seconds`` (or until it ends by itself)."""
        self._stop.wait(timeout=seconds)

    def __enter__(self) -> SignupLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # -- one client -----------------------------------------------------
    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._issued >= self.max_signups or time.monotonic() >= self._deadline:
                return None
            self._issued += 1
            return self._issued

    def _connect(self) -> AuthService | None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                return AuthService(self.dsn)
            except psycopg2.Error:
                with self._lock:
                    self.report.reconnects += 1
                    if self.report.reconnects > self.max_reconnects:
                        return None
                time.sleep(0.1)
        return None

    def _client(self, n: int) -> None:
        auth = self._connect()
        with contextlib.suppress(threading.BrokenBarrierError):
            self._ready.wait(timeout=30)
        try:
            while auth is not None:
                number = self._next()
                if number is None:
                    return
                auth = self._signup(auth, n, number)
                if self.pause_s:
                    time.sleep(self.pause_s)
        finally:
            if auth is not None:
                with contextlib.suppress(psycopg2.Error):
                    auth.close()

    def _signup(self, auth: AuthService, client: int, number: int) -> AuthService | None:
        user_id = uuid.uuid4()
        kind = number % 10
        kwargs: dict[str, object]
        if kind == 7:
            kwargs = {"phone": f"+1{user_id.int % 10**12:012d}"}
        elif kind == 8:
            kwargs = {"anonymous": True}
        else:
            kwargs = {"email": f"load-{self.tag}-{number}@example.com", "confirmed": kind < 3}
        began = time.monotonic()
        try:
            auth.signup(user_id=user_id, **kwargs)  # type: ignore[arg-type]
        except psycopg2.Error as exc:
            latency = time.monotonic() - began
            # a broken connection fails the rollback too: report the error that broke it
            cause = exc.__context__ if isinstance(exc.__context__, psycopg2.Error) else exc
            with self._lock:
                self.report.signups.append(Signup(client, began, latency, str(user_id),
                                                  getattr(cause, "pgcode", None), _first_line(cause)))
            if auth.conn.closed:
                with contextlib.suppress(psycopg2.Error):
                    auth.close()
                return self._connect()
            return auth
        latency = time.monotonic() - began
        with self._lock:
            self.report.signups.append(Signup(client, began, latency, str(user_id)))
        return auth
