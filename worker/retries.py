"""How the worker's threads wait out a Redis that is unavailable (restarting, failing
over): a pause before each retry, 0.1 s at first and doubling up to 5 s, back to 0.1 s
once a call succeeds. One policy for the threads that take jobs, store results, write
streams and hear cancels."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

T = TypeVar("T")

FIRST_PAUSE_S = 0.1
LONGEST_PAUSE_S = 5.0


class Backoff:
    """The pause before the next retry."""

    def __init__(self) -> None:
        self.pause = FIRST_PAUSE_S

    def reset(self) -> None:
        self.pause = FIRST_PAUSE_S

    def wait(self, stop: threading.Event | None = None) -> None:
        """Sleep the pause (or until ``stop`` is set), and double the next."""
        if stop is None:
            time.sleep(self.pause)
        else:
            stop.wait(self.pause)
        self.pause = min(self.pause * 2, LONGEST_PAUSE_S)


def until_done(
    call: Callable[[], T],
    log: logging.Logger,
    what: str,
    mend: Callable[[redis.RedisError], bool] | None = None,
) -> T:
    """``call``'s value, once Redis has taken it: each Redis error is logged ("could not
    ``what``") and the call retried after the backoff's pause; ``mend`` may repair an
    error first (True: retry at once)."""
    backoff = Backoff()
    while True:
        try:
            return call()
        except redis.RedisError as exc:
            if mend is not None and mend(exc):
                continue
            log.warning("could not %s (%s); retrying in %.1f s", what, exc, backoff.pause)
            backoff.wait()
