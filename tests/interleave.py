"""Deterministic interleavings: hold one side open, start the other, wait until the server says it waits, release.

``Waiting`` runs a callable in a thread whose connections carry an
``application_name``; ``wait_for_lock`` polls ``pg_stat_activity`` until a
backend of that name waits on a lock (bounded in time), so a test never
relies on sleeping long enough.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2

WAIT_LIMIT_S = 20.0


def url_named(url: str, application_name: str) -> str:
    return url + ("&" if "?" in url else "?") + f"application_name={application_name}"


def waiting_on_lock(admin_url: str, application_name: str, events: tuple[str, ...] | None = None) -> bool:
    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT wait_event FROM pg_stat_activity WHERE application_name = %s "
                        "AND wait_event_type = 'Lock'", (application_name,))
            found = [row[0] for row in cur.fetchall()]
            return any(events is None or event in events for event in found)
    finally:
        conn.close()


ROW_LOCK = ("transactionid", "tuple")


def wait_for_lock(admin_url: str, application_name: str, limit_s: float = WAIT_LIMIT_S,
                  events: tuple[str, ...] | None = None) -> None:
    """Until a backend named ``application_name`` waits on a lock (of one of ``events``, e.g. ``ROW_LOCK``)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if waiting_on_lock(admin_url, application_name, events):
            return
        time.sleep(0.02)
    raise AssertionError(f"{application_name} never waited on a lock within {limit_s} s")


class Waiting:
    """Run ``work`` in a thread; ``result()`` joins it (bounded) and re-raises what it raised."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._work = work
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as exc:  # handed to the test in result()
            self._error = exc

    def result(self, limit_s: float = WAIT_LIMIT_S) -> Any:
        self._thread.join(limit_s)
        if self._thread.is_alive():
            raise AssertionError(f"the waiting side did not finish within {limit_s} s")
        if self._error is not None:
            raise self._error
        return self._value
