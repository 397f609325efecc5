"""Load generators: clients signing users up, signing in and refreshing tokens as the auth service does.

Each client is a thread with its own connection as ``supabase_auth_admin``
(``AuthService``). ``SignupLoad`` only signs users up: one signup is one transaction
(INSERT into ``auth.users``, the UPDATE of ``role``, the identity and metadata
writes, the confirmation when autoconfirmed), committed. ``AuthLoad`` mixes signups
with sign-ins (``AuthService.sign_in``: INSERT sessions and refresh_tokens, UPDATE
users.last_sign_in_at) and token refreshes (``AuthService.refresh``: the legacy token
swap, UPDATE sessions and users), in the proportions it is given. Both record, for
every request, its kind, when it started, how long it took and, when it failed, the
SQLSTATE and the first line of the error (``Request``; ``Signup`` is the same type).

Bounded: a load stops at ``max_signups`` (``max_requests``) requests in all, at
``deadline_s`` seconds after ``start()``, or at ``stop()``, whichever comes first; a
client whose connection breaks reconnects at most ``max_reconnects`` times in all.
Loopback only: the DSN is whatever the caller passes (the tests pass 127.0.0.1).

    with SignupLoad(db.url("supabase_auth_admin"), clients=4, max_signups=2000, deadline_s=60) as load:
        ... run the migration ...
    report = load.report
    assert report.failed == 0

    with AuthLoad(db.url("supabase_auth_admin"), signups=2, sign_ins=1, refreshes=1) as load:
        ...
    load.report.only("refresh").longest_stall_s()
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg2

from ghostsync.testing.authservice import AuthService, AuthServiceError, Session

if TYPE_CHECKING:
    from typing_extensions import Self


KINDS = ("signup", "sign_in", "refresh")


@dataclass(frozen=True)
class Request:
    """One request: its kind ("signup", "sign_in", "refresh"), start (time.monotonic), latency,
    the user it was for, and the error if it failed."""

    client: int
    started: float
    latency_s: float
    user_id: str
    sqlstate: str | None = None
    error: str | None = None
    kind: str = "signup"

    @property
    def ok(self) -> bool:
        return self.error is None


Signup = Request  # one signup attempt; the name ``SignupLoad``'s users know


@dataclass
class LoadReport:
    """What a load run did; every figure comes from ``signups``, the list of every request
    (of every kind; ``requests`` is the same list, ``only(kind)`` the report of one kind)."""

    signups: list[Request] = field(default_factory=list)
    began: float = 0.0
    ended: float = 0.0
    reconnects: int = 0

    @property
    def requests(self) -> list[Request]:
        return self.signups

    def only(self, kind: str) -> LoadReport:
        """The same run, counting only the requests of ``kind``."""
        return LoadReport([r for r in self.signups if r.kind == kind], self.began, self.ended, self.reconnects)

    @property
    def kinds(self) -> Counter[str]:
        return Counter(r.kind for r in self.signups)

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
        kinds = self.kinds
        if set(kinds) - {"signup"}:
            noun = "requests (" + ", ".join(f"{kind} {kinds[kind]}" for kind in KINDS if kinds[kind]) + ")"
        else:
            noun = "signups"
        line = (f"{noun} {self.attempted} attempted, {self.failed} failed; longest stall "
                f"{self.longest_stall_s() * 1000:.0f} ms (p50 {self.percentile_s(50) * 1000:.0f} ms, "
                f"p99 {self.percentile_s(99) * 1000:.0f} ms) over {self.ended - self.began:.1f} s")
        if self.errors:
            line += "; errors: " + ", ".join(f"{n}x {state} {msg}" for (state, msg), n in self.errors.items())
        return line


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _BoundedLoad:
    """``clients`` threads making requests until stopped, ``max_requests`` or ``deadline_s``."""

    thread_name = "load"

    def __init__(
        self,
        dsn: str,
        *,
        clients: int = 4,
        max_requests: int = 2000,
        deadline_s: float = 60.0,
        pause_s: float = 0.005,
        max_reconnects: int = 50,
        tag: str | None = None,
    ) -> None:
        if clients < 1 or max_requests < 1 or deadline_s <= 0:
            raise ValueError("clients, max_signups/max_requests and deadline_s must be positive")
        self.dsn = dsn
        self.clients = clients
        self.max_requests = max_requests
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
    def start(self) -> Self:
        self._deadline = time.monotonic() + self.deadline_s
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), name=f"{self.thread_name}-{n}", daemon=True)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # -- one client -----------------------------------------------------
    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._issued >= self.max_requests or time.monotonic() >= self._deadline:
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
        state = _ClientState()
        with contextlib.suppress(threading.BrokenBarrierError):
            self._ready.wait(timeout=30)
        try:
            while auth is not None:
                number = self._next()
                if number is None:
                    return
                auth = self._request(auth, n, number, state)
                if self.pause_s:
                    time.sleep(self.pause_s)
        finally:
            if auth is not None:
                with contextlib.suppress(psycopg2.Error):
                    auth.close()

    def _request(self, auth: AuthService, client: int, number: int, state: _ClientState) -> AuthService | None:
        raise NotImplementedError

    def _timed(self, auth: AuthService, client: int, kind: str, user_id: str,
               call: Callable[[], object]) -> tuple[AuthService | None, object]:
        """Run one request, record it; returns the client to go on with and the call's result."""
        began = time.monotonic()
        try:
            result = call()
        except (psycopg2.Error, AuthServiceError) as exc:
            latency = time.monotonic() - began
            # a broken connection fails the rollback too: report the error that broke it
            cause: BaseException = exc.__context__ if isinstance(exc.__context__, psycopg2.Error) else exc
            with self._lock:
                self.report.signups.append(Request(client, began, latency, user_id,
                                                   getattr(cause, "pgcode", None), _first_line(cause), kind))
            if auth.conn.closed:
                with contextlib.suppress(psycopg2.Error):
                    auth.close()
                return self._connect(), None
            return auth, None
        latency = time.monotonic() - began
        with self._lock:
            self.report.signups.append(Request(client, began, latency, user_id, kind=kind))
        return auth, result


@dataclass
class _ClientState:
    """What one client remembers: users it can sign in, sessions it can refresh (bounded)."""

    users: list[uuid.UUID] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    limit: int = 50

    def add_user(self, user_id: uuid.UUID) -> None:
        self.users.append(user_id)
        del self.users[:-self.limit]

    def add_session(self, session: Session) -> None:
        self.sessions.append(session)
        del self.sessions[:-self.limit]


class SignupLoad(_BoundedLoad):
    """``clients`` threads signing users up until stopped, ``max_signups`` or ``deadline_s``.

    Of every ten signups: three email signups autoconfirmed (the confirmation in the
    signup's transaction; the session transaction that follows an autoconfirmed
    ``/signup`` is left to ``AuthLoad``'s sign-ins), five unconfirmed email signups, one
    phone and one anonymous signup.
    """

    thread_name = "signup"

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
        super().__init__(dsn, clients=clients, max_requests=max_signups, deadline_s=deadline_s, pause_s=pause_s,
                         max_reconnects=max_reconnects, tag=tag)
        self.max_signups = max_signups

    def _request(self, auth: AuthService, client: int, number: int, state: _ClientState) -> AuthService | None:
        return self._signup(auth, client, number, state)[0]

    def _signup(self, auth: AuthService, client: int, number: int,
                state: _ClientState) -> tuple[AuthService | None, uuid.UUID | None]:
        user_id = uuid.uuid4()
        kind = number % 10
        call: Callable[[], object]
        if kind == 7:
            phone = f"+1{user_id.int % 10**12:012d}"
            call = lambda: auth.signup_phone(phone, user_id=user_id)  # noqa: E731
        elif kind == 8:
            call = lambda: auth.signup_anonymous(user_id=user_id)  # noqa: E731
        else:
            email = f"load-{self.tag}-{number}@example.com"
            call = lambda: auth.signup_email(email, autoconfirm=kind < 3, user_id=user_id, session=False)  # noqa: E731
        auth_after, result = self._timed(auth, client, "signup", str(user_id), call)
        if result is not None and kind < 3:
            state.add_user(user_id)
        return auth_after, (user_id if result is not None else None)


class AuthLoad(SignupLoad):
    """Signups, sign-ins and token refreshes in the proportions ``signups``:``sign_ins``:``refreshes``.

    Requests go round in that proportion (``AuthLoad(dsn, signups=2, sign_ins=1, refreshes=1)``:
    signup, signup, sign-in, refresh, ...). Each client signs in users it signed up itself
    (autoconfirmed email users) and refreshes sessions it got itself; a sign-in due before
    the client has a user is a signup instead, a refresh due before it has a session a
    sign-in. A refresh replaces the session's token with the new one (legacy tokens rotate).
    Bounded like ``SignupLoad``: ``max_requests`` requests of all kinds, ``deadline_s``.
    """

    thread_name = "auth"

    def __init__(
        self,
        dsn: str,
        *,
        signups: int = 2,
        sign_ins: int = 1,
        refreshes: int = 1,
        clients: int = 4,
        max_requests: int = 2000,
        deadline_s: float = 60.0,
        pause_s: float = 0.005,
        max_reconnects: int = 50,
        tag: str | None = None,
    ) -> None:
        if min(signups, sign_ins, refreshes) < 0 or signups + sign_ins + refreshes < 1:
            raise ValueError("signups, sign_ins and refreshes must be non-negative, and not all zero")
        super().__init__(dsn, clients=clients, max_signups=max_requests, deadline_s=deadline_s, pause_s=pause_s,
                         max_reconnects=max_reconnects, tag=tag)
        self.max_requests = max_requests
        self.mix = ["signup"] * signups + ["sign_in"] * sign_ins + ["refresh"] * refreshes

    def _request(self, auth: AuthService, client: int, number: int, state: _ClientState) -> AuthService | None:
        kind = self.mix[number % len(self.mix)]
        if kind == "refresh" and state.sessions:
            session = state.sessions.pop(0)
            after, result = self._timed(auth, client, "refresh", str(session.user_id),
                                        lambda: auth.refresh(session))
            if isinstance(result, Session):
                state.add_session(result)
            return after
        if kind in ("refresh", "sign_in") and state.users:
            user_id = state.users[number % len(state.users)]
            after, result = self._timed(auth, client, "sign_in", str(user_id), lambda: auth.sign_in(user_id))
            if isinstance(result, Session):
                state.add_session(result)
            return after
        # a signup (or a sign-in due before this client has a user): an autoconfirmed email user
        user_id = uuid.uuid4()
        email = f"auth-{self.tag}-{number}@example.com"
        after, result = self._timed(auth, client, "signup", str(user_id),
                                    lambda: auth.signup_email(email, autoconfirm=True, user_id=user_id, session=False))
        if result is not None:
            state.add_user(user_id)
        return after
