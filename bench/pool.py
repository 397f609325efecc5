"""Auth-service clients that work in short slices, for throughput comparisons.

Each client is one OS process (no client waits on another's interpreter lock)
holding one connection as ``supabase_auth_admin`` through the test harness's
``AuthService``, which writes the auth tables statement by statement as the
auth service (GoTrue) does. A ``Pool`` is the clients of one database: they
connect and warm up once (PL/pgSQL is compiled per session), then work only
during slices. ``run_in_turn`` gives the pools of several databases slices in
turn, round after round, so neighbouring slices of every database see the
same machine; per slice it records each pool's operations and the CPU time its
server backends used (``/proc/PID/schedstat``: nanoseconds on a CPU), which
other load on the machine changes far less than wall time.

Every slice ends at its deadline and after ``max_ops_per_slice`` operations
per client, whichever comes first.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import backend_pid, cpu_seconds
from ghostsync.testing.authservice import AuthService

Operation = Callable[[AuthService, int], None]
_FORK = multiprocessing.get_context("fork")


def signup(auth: AuthService, number: int) -> None:
    """One signup of ``ghostsync.testing.loadgen.SignupLoad``'s mix: of every ten, three email signups
    autoconfirmed (the confirmation in the signup's transaction), five unconfirmed, one phone, one
    anonymous; no session transaction after it."""
    kind = number % 10
    user_id = uuid.uuid4()
    if kind == 7:
        auth.signup_phone(f"+1{user_id.int % 10**12:012d}", user_id=user_id, session=False)
    elif kind == 8:
        auth.signup_anonymous(user_id=user_id)
    else:
        auth.signup_email(f"bench-{user_id.hex}@example.com", autoconfirm=kind < 3, user_id=user_id, session=False)


def sign_in_from(ids: Sequence[str]) -> Operation:
    """Sign-ins (password grant) of users picked by a fixed sequence, the same in every database."""
    def sign_in(auth: AuthService, number: int) -> None:
        auth.sign_in(uuid.UUID(ids[(number * 104729) % len(ids)]))
    return sign_in


def _client(dsn: str, operation: Operation, index: int, warmup_ops: int, max_ops: int, start: Any, end: Any,
            deadline: Any, closing: Any, done: Any, errors: Any, ready: Any) -> None:
    try:
        auth = AuthService(dsn)
        backend = backend_pid(auth.conn)
        auth.conn.commit()
        for i in range(warmup_ops):
            operation(auth, 1_000_000_000 + index * 1000 + i)
    except Exception as exc:  # reported through ``ready``
        ready.put((None, f"{type(exc).__name__}: {exc}".strip()))
        return
    ready.put((backend, None))
    counter = itertools.count(index * 10_000_000)
    while True:
        try:
            start.wait(timeout=900)
        except threading.BrokenBarrierError:
            return
        if closing.value:
            break
        ops = 0
        until = deadline.value
        while ops < max_ops and time.monotonic() < until:
            try:
                operation(auth, next(counter))
                ops += 1
            except Exception:  # counted; the caller stops the run
                with errors.get_lock():
                    errors.value += 1
                break
        done[index] = ops
        try:
            end.wait(timeout=900)
        except threading.BrokenBarrierError:
            return
    auth.close()


class Pool:
    """``clients`` client processes of one database, working only during a slice."""

    def __init__(self, dsn: str, operation: Operation, *, clients: int, warmup_ops: int = 20,
                 max_ops_per_slice: int = 100_000) -> None:
        self.clients = clients
        self._start = _FORK.Barrier(clients + 1)
        self._end = _FORK.Barrier(clients + 1)
        self._deadline = _FORK.Value("d", 0.0, lock=False)
        self._closing = _FORK.Value("b", 0, lock=False)
        self._done = _FORK.Array("q", clients, lock=False)
        self._errors = _FORK.Value("i", 0)
        ready = _FORK.Queue()
        self._procs = [
            _FORK.Process(target=_client, daemon=True, args=(
                dsn, operation, index, warmup_ops, max_ops_per_slice, self._start, self._end, self._deadline,
                self._closing, self._done, self._errors, ready))
            for index in range(clients)
        ]
        for proc in self._procs:
            proc.start()
        answers = [ready.get(timeout=180) for _ in self._procs]
        problems = [problem for _, problem in answers if problem]
        if problems:
            self.close()
            raise RuntimeError(f"a client could not start: {problems[0]}")
        self.backend_pids = [int(pid) for pid, _ in answers]

    @property
    def errors(self) -> int:
        return int(self._errors.value)

    def server_cpu(self) -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in self.backend_pids)

    def run_slice(self, seconds: float) -> tuple[int, float, float]:
        """One slice: (operations, wall seconds, server CPU seconds of the pool's backends)."""
        cpu = self.server_cpu()
        began = time.monotonic()
        self._deadline.value = began + seconds
        for i in range(self.clients):
            self._done[i] = 0
        self._start.wait(timeout=60)
        self._end.wait(timeout=seconds + 300)
        wall = time.monotonic() - began
        return sum(self._done), wall, self.server_cpu() - cpu

    def close(self) -> None:
        self._closing.value = 1
        with contextlib.suppress(threading.BrokenBarrierError):
            self._start.wait(timeout=5)
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()  # our own child, stuck: end it
                proc.join(timeout=10)


@dataclass
class Slices:
    """Per pool, per recorded round: operations, wall seconds, server CPU seconds."""

    ops: dict[str, list[int]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def per_cpu_second(self, name: str) -> list[float]:
        return [o / c if c > 0 else float("nan") for o, c in zip(self.ops[name], self.cpu[name], strict=True)]

    def per_second(self, name: str) -> list[float]:
        return [o / w if w > 0 else float("nan") for o, w in zip(self.ops[name], self.wall[name], strict=True)]

    def capacity_ratios(self, a: str, b: str) -> list[float]:
        """Per round: a's operations per server CPU second over b's (b's slice next to a's)."""
        return [x / y for x, y in zip(self.per_cpu_second(a), self.per_cpu_second(b), strict=True) if y > 0]

    def throughput_ratios(self, a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(self.per_second(a), self.per_second(b), strict=True) if y > 0]

    def server_us(self, name: str) -> float:
        ops = sum(self.ops[name])
        return sum(self.cpu[name]) / ops * 1e6 if ops else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "wall_s": self.wall, "server_cpu_s": self.cpu}


def run_in_turn(pools: dict[str, Pool], *, rounds: int, slice_s: float, say: Callable[[str], None]) -> Slices:
    """Each round runs one slice of every pool in turn, the order rotated every round and the whole
    cycle reversed every other time round; one unrecorded round first."""
    from bench.harness import orders

    names = list(pools)
    found = Slices({n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names})
    for r, order in enumerate(orders(names, rounds + 1)):
        for name in order:
            ops, wall, cpu = pools[name].run_slice(slice_s)
            if pools[name].errors:
                raise RuntimeError(f"{name}: {pools[name].errors} client error(s) during the slice")
            if r > 0:
                found.ops[name].append(ops)
                found.wall[name].append(wall)
                found.cpu[name].append(cpu)
        if r > 0 and (r % 5 == 0 or r == rounds):
            say(f"   round {r}/{rounds}: " + ", ".join(
                f"{n} {found.ops[n][-1] / max(found.cpu[n][-1], 1e-9):,.0f}/CPU-s" for n in names))
    return found
