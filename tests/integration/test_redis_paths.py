"""The Redis paths of our own: pub/sub reads under load, and the take script."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from aimass.protocol.pubsub import next_message

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


def test_the_take_script_reads_the_envelope_with_or_without_its_body(redis_url: str) -> None:
    """The take script skips the body when it can; an envelope where that shortcut
    would mislead (a nested "body" key first, a body that is not a string, spaces after
    colons) is still recorded under its own delivery tag and routing key."""
    from aimass.worker.redis_queue import ModelQueues

    client = redis.Redis.from_url(redis_url)
    queues = ModelQueues(client, ["take-test"], "tester", 60)

    def envelope(tag: str, body: object, headers: dict[str, object]) -> dict[str, object]:
        return {"headers": {"id": f"job-{tag}", "task": "aimass.classify", **headers},
                "body": body, "content-type": "application/json",
                "properties": {"delivery_tag": tag, "body_encoding": "base64",
                               "delivery_info": {"exchange": "", "routing_key":
                                                 "aimass.take-test"}}}

    messages = {
        "plain": json.dumps(envelope("plain", "QUJD" * 5000, {})),
        "nested-first": json.dumps(envelope("nested-first", "QUJD",
                                            {"body": 'x\\", "properties": {}'})),
        "object-body": json.dumps(envelope("object-body", {"body": "inner"}, {})),
    }
    client.lpush("aimass.take-test", *messages.values())
    taken = queues.take(10)
    assert sorted(t.delivery_tag for t in taken) == sorted(messages)
    for item in taken:
        assert item.raw.decode() == messages[item.delivery_tag]
        stored = json.loads(client.hget("unacked", item.delivery_tag))
        assert stored == [json.loads(messages[item.delivery_tag]), "", "aimass.take-test"]
        meta = json.loads(client.get(f"celery-task-meta-job-{item.delivery_tag}"))
        assert meta["status"] == "STARTED"
    client.close()
