"""Concurrent auth-service clients: signups and sign-ins, bounded in count and in time.

Every client has its own connection as ``supabase_auth_admin`` and writes
through ``ghostsync.testing.authservice.AuthService`` exactly as the auth
service does (unqualified ``users``; a signup is INSERT then UPDATE in one
transaction).

- ``Pool``: the clients of one database for throughput comparisons, one OS
  process each (no client waits on another's interpreter lock), connected and
  warmed up once (plpgsql is compiled per session), then released for slices
  of a fixed length. ``run_in_turn`` gives the pools of several databases
  short slices in turn, round after round, so neighbouring slices of every
  database see the same machine; it also counts the CPU time the pools'
  server backends and client processes use, which other load on the machine
  barely changes.
- ``Stream``: a paced signup stream in threads (the upgrade scenario), which
  records every signup's start and end.

Every loop ends at a deadline and after a maximum count, whichever comes first.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostsync.testing.authservice import AuthService

_sequence = itertools.count(1)
_sequence_lock = threading.Lock()


def next_number() -> int:
    with _sequence_lock:
        return next(_sequence)


Operation = Callable[[AuthService, int], None]


def signup(auth: AuthService, i: int) -> None:
    """One signup of the mix the seed has: mostly email, some phone, anonymous and SSO."""
    n = next_number()
    tag = f"{os.getpid()}x{n}"  # unique across the client processes of a run
    kind = n % 20
    if kind == 0:
        auth.signup(phone=f"1777{os.getpid():07d}{n:08d}")
    elif kind == 1:
        auth.signup(anonymous=True)
    elif kind == 2:
        auth.signup(email=f"bench{tag}@sso.example", sso=True, confirmed=True)
    else:
        auth.signup(email=f"bench{tag}@signup.example", confirmed=kind % 4 == 0,
                     user_meta={"full_name": f"Bench {tag}"})


def sign_in_from(ids: Sequence[str], seed: int = 0) -> Operation:
    """Sign-ins of users picked at random (the same sequence for every database)."""
    def sign_in(auth: AuthService, i: int) -> None:
        auth.sign_in(ids[(seed * 7919 + i * 104729) % len(ids)])  # type: ignore[arg-type]
    return sign_in


@dataclass
class StreamResult:
    clients: int
    ops: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    # (start, end) of every operation, on time.perf_counter()'s clock
    spans: list[tuple[float, float]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def max_latency_between(self, start: float, end: float) -> float:
        inside = [e - s for s, e in self.spans if s < end and e > start]
        return max(inside, default=0.0)


class Stream:
    """``clients`` threads running ``operation`` against ``dsn``; start(), then wait() or stop()."""

    def __init__(self, dsn: str, operation: Operation, *, clients: int, duration_s: float | None,
                 max_ops_per_client: int, rate_per_client: float | None = None, warmup_ops: int = 3,
                 hard_limit_s: float = 900.0) -> None:
        self.dsn = dsn
        self.operation = operation
        self.clients = clients
        self.duration_s = duration_s
        self.max_ops = max_ops_per_client
        self.rate = rate_per_client
        self.warmup_ops = warmup_ops
        self.hard_limit_s = hard_limit_s
        self.result = StreamResult(clients=clients)
        self._stop = threading.Event()
        self._ready = threading.Barrier(clients + 1, action=self._mark_start)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.t0 = 0.0
        self._ends: list[float] = []

    def start(self) -> Stream:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            self._ready.wait(timeout=120)
        except threading.BrokenBarrierError:
            self._stop.set()  # a client could not connect or warm up: its error is in the result
            self.t0 = time.perf_counter()
        return self

    def _mark_start(self) -> None:
        # runs once, in one thread, after every client is ready and before any is released
        self.t0 = time.perf_counter()

    def stop(self) -> StreamResult:
        self._stop.set()
        return self.wait()

    def wait(self) -> StreamResult:
        for thread in self._threads:
            thread.join(timeout=self.hard_limit_s + 60)
        self.result.elapsed_s = (max(self._ends) if self._ends else time.perf_counter()) - self.t0
        return self.result

    def _client(self, index: int) -> None:
        auth = None
        ops: list[tuple[float, float]] = []
        errors = 0
        first_error = None
        try:
            auth = AuthService(self.dsn)
            with auth.conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = int(cur.fetchone()[0])  # type: ignore[index]
            auth.conn.commit()
            for i in range(self.warmup_ops):
                self.operation(auth, -1 - i - index * 1000)
        except Exception as exc:  # reported with the result
            first_error = f"{type(exc).__name__}: {exc}".strip()
            self._ready.abort()
            self._record(ops, 1, first_error, time.perf_counter(), None)
            if auth is not None:
                auth.close()
            return
        try:
            self._ready.wait(timeout=120)
        except threading.BrokenBarrierError:
            auth.close()
            self._record(ops, 0, None, time.perf_counter(), pid)
            return
        t0 = self.t0
        deadline = t0 + (self.duration_s if self.duration_s is not None else self.hard_limit_s)
        deadline = min(deadline, t0 + self.hard_limit_s)
        rng = random.Random(index)
        i = 0
        try:
            while i < self.max_ops and not self._stop.is_set():
                now = time.perf_counter()
                if now >= deadline:
                    break
                if self.rate:
                    # paced: the i-th operation of this client starts no earlier than t0 + i/rate (+ jitter)
                    due = t0 + (i + rng.random()) / self.rate
                    if due > now:
                        time.sleep(min(due - now, max(0.0, deadline - now)))
                        continue
                began = time.perf_counter()
                try:
                    self.operation(auth, index * 10_000_000 + i)
                except Exception as exc:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}".strip()
                    if errors > 100:
                        break
                ops.append((began, time.perf_counter()))
                i += 1
        finally:
            end = time.perf_counter()
            auth.close()
            self._record(ops, errors, first_error, end, pid)

    def _record(self, ops: list[tuple[float, float]], errors: int, first_error: str | None, end: float,
                pid: int | None) -> None:
        with self._lock:
            self.result.ops += len(ops)
            self.result.errors += errors
            self.result.first_error = self.result.first_error or first_error
            self.result.spans.extend(ops)
            self.result.latencies_s.extend(e - s for s, e in ops)
            self._ends.append(end)
            if pid is not None:
                self.result.pids.append(pid)


_FORK = multiprocessing.get_context("fork")


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of a process on this machine, from /proc; None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _pool_client(dsn: str, operation: Operation, index: int, warmup_ops: int, max_ops: int,
                 start: Any, end: Any, begin: Any, deadline: Any, closing: Any, done: Any, finished: Any,
                 errors: Any, ready: Any) -> None:
    """One client process: connect, warm up, then one burst per slice until told to close."""
    try:
        auth = AuthService(dsn)
        with auth.conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = int(cur.fetchone()[0])  # type: ignore[index]
        auth.conn.commit()
        for i in range(warmup_ops):
            operation(auth, -1 - i - index * 1000)
    except Exception as exc:  # reported through ``errors``
        errors.value += 1
        ready.put((None, f"{type(exc).__name__}: {exc}".strip()))
        return
    ready.put((backend, None))
    counter = itertools.count()
    while True:
        try:
            start.wait(timeout=600)
        except threading.BrokenBarrierError:
            return
        if closing.value:
            break
        ops = 0
        until = deadline.value
        pause = begin.value - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        while ops < max_ops and time.monotonic() < until:
            try:
                operation(auth, index * 10_000_000 + next(counter))
                ops += 1
            except Exception:  # counted; the caller stops the run
                with errors.get_lock():
                    errors.value += 1
                break
        done[index] = ops
        finished[index] = time.monotonic()
        try:
            end.wait(timeout=600)
        except threading.BrokenBarrierError:
            return
    auth.close()


class Pool:
    """``clients`` client processes of one database that work only during a slice.

    A slice ends at its deadline or after ``max_ops_per_slice`` operations per
    client, whichever comes first.
    """

    def __init__(self, dsn: str, operation: Operation, *, clients: int, warmup_ops: int = 20,
                 max_ops_per_slice: int = 100_000) -> None:
        self.clients = clients
        self._start = _FORK.Barrier(clients + 1)
        self._end = _FORK.Barrier(clients + 1)
        self._begin = _FORK.Value("d", 0.0, lock=False)
        self._deadline = _FORK.Value("d", 0.0, lock=False)
        self._closing = _FORK.Value("b", 0, lock=False)
        self._done = _FORK.Array("q", clients, lock=False)
        self._finished = _FORK.Array("d", clients, lock=False)
        self._errors = _FORK.Value("i", 0)
        ready = _FORK.Queue()
        self._t0 = 0.0
        self._duration = 0.0
        self._procs = [
            _FORK.Process(target=_pool_client, daemon=True, args=(
                dsn, operation, index, warmup_ops, max_ops_per_slice, self._start, self._end, self._begin,
                self._deadline, self._closing, self._done, self._finished, self._errors, ready))
            for index in range(clients)
        ]
        for proc in self._procs:
            proc.start()
        answers = [ready.get(timeout=120) for _ in self._procs]
        problems = [problem for _, problem in answers if problem]
        if problems:
            self.close()
            raise RuntimeError(f"a client could not start: {problems[0]}")
        self.backend_pids: list[int] = [pid for pid, _ in answers]
        self.client_pids: list[int] = [proc.pid for proc in self._procs if proc.pid is not None]
        self.ops = 0
        self.server_cpu_s = 0.0
        self.client_cpu_s = 0.0
        self._cpu_start = (0.0, 0.0)

    @property
    def errors(self) -> int:
        return int(self._errors.value)

    def begin_slice(self, duration_s: float, t0: float | None = None) -> None:
        """Release the clients until ``t0 + duration_s`` (t0: now); returns at once."""
        self._t0 = time.monotonic() if t0 is None else t0
        self._duration = duration_s
        self._begin.value = self._t0
        self._deadline.value = self._t0 + duration_s
        for i in range(self.clients):
            self._done[i] = 0
            self._finished[i] = 0.0
        self._start.wait(timeout=60)

    def finish_slice(self) -> float:
        """Wait for the slice to end; operations per second over it."""
        self._end.wait(timeout=self._duration + 120)
        elapsed = max(self._finished) - self._t0
        return sum(self._done) / elapsed if elapsed > 0 else 0.0

    def run_slice(self, duration_s: float) -> float:
        """One slice; its operations are added to ``ops``."""
        self.begin_slice(duration_s)
        rate = self.finish_slice()
        self.ops += sum(self._done)
        return rate

    def start_counting(self) -> None:
        """From now on, count operations and the CPU time of the pool's backends and client processes."""
        self.ops = 0
        self._cpu_start = self._cpu()

    def stop_counting(self) -> None:
        """``server_cpu_s`` and ``client_cpu_s``: CPU time used since ``start_counting`` (the pool is
        idle between slices, so this is the CPU time of the counted operations)."""
        server, client = self._cpu()
        self.server_cpu_s = server - self._cpu_start[0]
        self.client_cpu_s = client - self._cpu_start[1]

    def _cpu(self) -> tuple[float, float]:
        server = [process_cpu_seconds(pid) for pid in self.backend_pids]
        client = [process_cpu_seconds(pid) for pid in self.client_pids]
        return sum(x or 0.0 for x in server), sum(x or 0.0 for x in client)

    def close(self) -> None:
        self._closing.value = 1
        with contextlib.suppress(threading.BrokenBarrierError):
            self._start.wait(timeout=5)
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()  # our own child, stuck: end it
                proc.join(timeout=10)


def run_in_turn(pools: dict[str, Pool], *, rounds: int, slice_s: float) -> dict[str, list[float]]:
    """Each round runs one slice of every pool in turn (order rotated round by round, the whole
    cycle reversed every other time round, so every pool takes every position about equally often);
    returns ops/s per pool per round. One unrecorded round first warms every database."""
    names = list(pools)
    rates: dict[str, list[float]] = {name: [] for name in pools}
    for r in range(rounds + 1):
        if r == 1:
            for pool in pools.values():
                pool.start_counting()
        k = r % len(names)
        order = names[k:] + names[:k]
        for name in order if (r // len(names)) % 2 == 0 else list(reversed(order)):
            rate = pools[name].run_slice(slice_s)
            if pools[name].errors:
                raise RuntimeError(f"{name}: {pools[name].errors} client error(s) during the slice")
            if r > 0:
                rates[name].append(rate)
    for pool in pools.values():
        pool.stop_counting()
    return rates
