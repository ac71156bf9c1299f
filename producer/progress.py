"""A one-line progress bar on stderr for bulk runs (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
# Redraw at most this often, in seconds: a bar must not cost more than the jobs.
REDRAW_S = 0.1


class Progress:
    """``done/total [####----] rate ETA``, redrawn in place; silent when disabled."""

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "jobs",
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.label = label
        self.done = 0
        self.failed = 0
        self._started = time.monotonic()
        self._drawn = 0.0  # when the line was last drawn
        self._drawn_done = -1  # and the count it showed

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, count: int = 1, *, failed: int = 0) -> None:
        self.done += count
        self.failed += failed
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= REDRAW_S or self.done == self.total):
            self._drawn = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            if self._drawn_done != self.done:
                self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        failed = f", {self.failed} failed" if self.failed else ""
        if not self.total:
            return f"{self.done} {self.label}{failed}  {rate:.0f}/s  {elapsed:.0f}s"
        filled = int(WIDTH * min(self.done / self.total, 1.0))
        bar = "#" * filled + "-" * (WIDTH - filled)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_text = f"ETA {eta:.0f}s" if eta != float("inf") else "ETA ?"
        return f"{self.done}/{self.total} {self.label} [{bar}]{failed}  {rate:.0f}/s  {eta_text}"

    def _draw(self, now: float) -> None:
        self._drawn_done = self.done
        self.stream.write("\r" + self.line(now) + "\033[K")
        self.stream.flush()
