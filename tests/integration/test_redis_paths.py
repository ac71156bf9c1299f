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


@pytest.mark.parametrize("track_started", [True, False])
def test_the_take_script_reads_the_envelope_with_or_without_its_body(
    redis_url: str, track_started: bool
) -> None:
    """The take script skips the body when it can; an envelope where that shortcut
    would mislead (a nested "body" key first, a body that is not a string, spaces after
    colons) is still recorded under its own delivery tag and routing key. A STARTED
    record is written only where the worker tracks it (AIMASS_TRACK_STARTED)."""
    from aimass.worker.redis_queue import ModelQueues

    client = redis.Redis.from_url(redis_url)
    queues = ModelQueues(client, ["take-test"], "tester", 60, track_started=track_started)

    def envelope(tag: str, body: object, headers: dict[str, object]) -> dict[str, object]:
        return {
            "headers": {"id": f"job-{tag}", "task": "aimass.classify", **headers},
            "body": body,
            "content-type": "application/json",
            "properties": {
                "delivery_tag": tag,
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": "aimass.take-test"},
            },
        }

    messages = {
        "plain": json.dumps(envelope("plain", "QUJD" * 5000, {})),
        "nested-first": json.dumps(
            envelope("nested-first", "QUJD", {"body": 'x\\", "properties": {}'})
        ),
        "object-body": json.dumps(envelope("object-body", {"body": "inner"}, {})),
    }
    client.lpush("aimass.take-test", *messages.values())
    taken = queues.take(10)
    assert sorted(t.delivery_tag for t in taken) == sorted(messages)
    for item in taken:
        assert item.raw.decode() == messages[item.delivery_tag]
        stored = json.loads(client.hget("unacked", item.delivery_tag))
        assert stored == [json.loads(messages[item.delivery_tag]), "", "aimass.take-test"]
        meta = client.get(f"celery-task-meta-job-{item.delivery_tag}")
        if track_started:
            assert json.loads(meta)["status"] == "STARTED"
        else:
            assert meta is None
    client.close()


def test_a_take_and_a_settle_of_thousands_of_jobs_record_and_acknowledge_each_one(
    redis_url: str,
) -> None:
    """The scripts pass many keys and fields per command, in slices: a take of more jobs
    than a slice holds records every one, with its cancel mark and its run count, and
    their settle stores every result and acknowledges every message."""
    from aimass.protocol.keys import RUNS_HASH, cancelled_key
    from aimass.protocol.records import ResultRecord
    from aimass.worker.redis_queue import ModelQueues, Settlement

    client = redis.Redis.from_url(redis_url)
    queues = ModelQueues(client, ["slices"], "tester", 60)
    count = 2500
    client.lpush(
        "aimass.slices",
        *(
            json.dumps(
                {
                    "headers": {"id": f"job-{i}", "task": "aimass.classify"},
                    "body": "e30=",
                    "properties": {"delivery_tag": f"tag-{i}"},
                }
            )
            for i in range(count)
        ),
    )
    client.set(cancelled_key("job-7"), 1)
    client.hset(RUNS_HASH, mapping={"job-8": 2, "job-2400": 1})
    taken = queues.take(count + 10)
    assert [t.delivery_tag for t in taken] == [f"tag-{i}" for i in range(count)]  # in order
    assert client.hlen("unacked") == client.zcard("unacked_index") == count
    assert [i for i, t in enumerate(taken) if t.cancelled] == [7]
    assert {i: t.runs for i, t in enumerate(taken) if t.runs} == {8: 2, 2400: 1}
    queues.mark_runs([f"job-{i}" for i in range(10, 20)])
    queues.mark_runs(["job-8"])
    assert client.hget(RUNS_HASH, "job-8") == b"3" and client.hget(RUNS_HASH, "job-15") == b"1"
    queues.settle(
        [
            Settlement(t.delivery_tag, f"job-{i}", ResultRecord.success(f"job-{i}", {"i": i}))
            for i, t in enumerate(taken)
        ]
    )
    assert client.hlen("unacked") == client.zcard("unacked_index") == 0
    assert not client.exists(RUNS_HASH)
    stored = client.mget([f"celery-task-meta-job-{i}" for i in range(count)])
    assert [json.loads(raw)["result"] for raw in stored] == [{"i": i} for i in range(count)]
    client.close()
