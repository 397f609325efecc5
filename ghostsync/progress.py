"""Progress of a long job: a redrawn bar on a terminal, a steady log line anywhere else.

In a deploy pipeline (no terminal) a line goes to standard error every
``interval_s`` seconds: rows walked, ghosts repaired, rate and estimated time
left, so the pipeline shows the job is alive.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(done, repaired)`` after each batch; ``close()`` at the end."""

    def __init__(self, label: str, total: int | None, *, stream: TextIO | None = None,
                 tty: bool | None = None, interval_s: float = 10.0) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.began = self.last_line = time.monotonic()
        self.drawn = False

    def _describe(self, done: int, repaired: int) -> str:
        elapsed = max(time.monotonic() - self.began, 1e-6)
        rate = done / elapsed
        total = f"/~{self.total:,}" if self.total else ""
        pct = f" ({min(100.0, 100.0 * done / self.total):.0f}%)" if self.total else ""
        left = ""
        if self.total and rate > 0 and done < self.total:
            left = f", ~{(self.total - done) / rate:,.0f} s left"
        return f"{self.label}: {done:,}{total}{pct} walked, {repaired:,} repaired, {rate:,.0f}/s{left}"

    def update(self, done: int, repaired: int = 0) -> None:
        if self.tty:
            self.stream.write("\r" + self._describe(done, repaired) + "   ")
            self.stream.flush()
            self.drawn = True
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval_s:
            self.last_line = now
            self.stream.write(self._describe(done, repaired) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
