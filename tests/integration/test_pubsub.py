"""Pub/sub reads under load: a large message caught half-arrived is read whole."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from producer.pubsub import next_message

pytestmark = pytest.mark.integration


def test_draining_with_a_zero_timeout_loses_no_large_message(redis_url: str) -> None:
    count, payload = 600, b"r" * 300_000  # about what a large result or batch holds
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("aimass:test:large")
    assert next_message(pubsub, 5.0) is None  # the subscription is in place

    def publish() -> None:
        sender = redis.Redis.from_url(redis_url)
        for _ in range(count):
            sender.publish("aimass:test:large", payload)
            time.sleep(0.001)
        sender.close()

    thread = threading.Thread(target=publish)
    thread.start()
    received, deadline = 0, time.monotonic() + 60
    while received < count and time.monotonic() < deadline:
        message = next_message(pubsub, 0)  # the drain that once raised TimeoutError
        if message is not None:
            assert message["data"] == payload
            received += 1
    thread.join()
    pubsub.close()
    client.close()
    assert received == count
