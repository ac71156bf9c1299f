"""The worker's one retry policy for Redis (worker/retries.py)."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from aimass.worker.retries import LONGEST_PAUSE_S, Backoff, until_done

pytestmark = pytest.mark.unit


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff()
    stopped = threading.Event()
    stopped.set()  # each wait returns at once
    pauses = []
    for _ in range(8):
        pauses.append(backoff.pause)
        backoff.wait(stopped)
    assert pauses[:3] == [0.1, 0.2, 0.4] and pauses[-1] == LONGEST_PAUSE_S
    backoff.reset()
    assert backoff.pause == 0.1


def test_until_done_retries_redis_errors_and_lets_a_mend_retry_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = [redis.ConnectionError("down"), redis.ResponseError("NOSCRIPT"), None]
    mended = []

    def call() -> str:
        error = errors.pop(0)
        if error is not None:
            raise error
        return "stored"

    def mend(exc: redis.RedisError) -> bool:
        mended.append(exc)
        return isinstance(exc, redis.ResponseError)

    log = logging.getLogger("test-retries")
    with caplog.at_level(logging.WARNING, logger="test-retries"):
        assert until_done(call, log, "store 3 results", mend=mend) == "stored"
    assert len(mended) == 2  # the connection error was not mended: it waited once
    assert [r.getMessage() for r in caplog.records] == [
        "could not store 3 results (down); retrying in 0.1 s"
    ]


def test_until_done_lets_other_errors_through() -> None:
    def call() -> None:
        raise ValueError("a bug, not Redis")

    with pytest.raises(ValueError):
        until_done(call, logging.getLogger("test-retries"), "store")
