"""A one-line progress bar on standard error, silent when that is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(done, extra)`` redraws ``label: done/total (pct) rate``; ``close()`` ends the line."""

    def __init__(self, label: str, total: int | None, *, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.began = time.monotonic()
        self.drawn = False

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.began, 1e-6)
        total = f"/~{self.total:,}" if self.total else ""
        pct = f" ({min(100.0, 100.0 * done / self.total):.0f}%)" if self.total else ""
        self.stream.write(f"\r{self.label}: {done:,}{total}{pct}, {done / elapsed:,.0f}/s{extra}   ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
