"""The bulk consumer's loop outlives a take that fails (worker/consumer.py)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from aimass.worker.consumer import BulkConsumer


class FailingQueues:
    """Model queues whose first take raises what no Redis error is: then they are empty."""

    max_message_bytes = 1024

    def __init__(self) -> None:
        self.takes = 0
        self.second_take = threading.Event()

    def take(self, limit: int) -> list[Any]:
        self.takes += 1
        if self.takes == 1:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        self.second_take.set()
        return []

    def wait(self, timeout: float, limit: int) -> list[Any]:
        time.sleep(timeout)
        return self.take(limit)


def test_a_take_that_raises_a_bug_is_logged_and_retried_and_the_thread_lives_on(caplog):
    queues = FailingQueues()
    consumer = BulkConsumer(SimpleNamespace(poke=lambda: None), queues, capacity=4)  # type: ignore[arg-type]
    consumer.start()
    try:
        assert queues.second_take.wait(timeout=10), "the consumer took no more after the error"
        assert consumer.health(stall_s=60)["consumer"] is True
    finally:
        consumer.stop(timeout=5)
    assert "taking jobs failed" in caplog.text and "UnicodeDecodeError" in caplog.text
