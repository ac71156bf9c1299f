"""Waiting in tests for something that real processes do in their own time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.05
) -> None:
    """Return once ``condition()`` holds; fail the test, naming ``what``, after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)
