"""The Redis paths of our own: pub/sub reads under load, and the take script."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from aimass.protocol.pubsub import next_message

pytestmark = pytest.mark.integration


def message_tag(unacked_tag: str) -> str:
    """The delivery tag of a message from the tag the take script recorded it under
    (padded past 64 bytes, the padding after a last '#')."""
    assert len(unacked_tag) > 64, unacked_tag
    return unacked_tag.rsplit("#", 1)[0]


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
    assert sorted(message_tag(t.delivery_tag) for t in taken) == sorted(messages)
    for item in taken:
        tag = message_tag(item.delivery_tag)
        assert item.raw.decode() == messages[tag]
        stored = json.loads(client.hget("unacked", item.delivery_tag))
        assert stored == [json.loads(messages[tag]), "", "aimass.take-test"]
        meta = client.get(f"celery-task-meta-job-{tag}")
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
    assert [message_tag(t.delivery_tag) for t in taken] == [f"tag-{i}" for i in range(count)]
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


def test_the_take_script_reads_the_client_s_messages_without_decoding_them(
    redis_url: str,
) -> None:
    """A message the client pushed carries the encoder's mark: the take script reads its
    job id and delivery tag by their place, and records it as kombu would (restorable to
    the queue it came from) with its cancel mark and run count. A marked message laid out
    otherwise (an older client's, or not as the encoder writes JSON), and a job id that
    JSON escapes (pushed unmarked), are decoded instead."""
    from aimass.producer.enqueue import Enqueuer, pushed_message
    from aimass.producer.submission import Submission
    from aimass.protocol.keys import RUNS_HASH, cancelled_key
    from aimass.protocol.messages import TaskMessage
    from aimass.protocol.queues import ENCODER_MARK
    from aimass.worker.redis_queue import ModelQueues
    from tests.support.tiny_models import row_image

    client = redis.Redis.from_url(redis_url)
    queues = ModelQueues(client, ["tiny"], "tester", 60)
    ids = ["plain-1", "plain-2", 'with "quotes" \\ and a backslash']
    submissions = [Submission.classify(row_image(1), model="tiny", job_id=i) for i in ids]
    assert [pushed_message(s).startswith(ENCODER_MARK) for s in submissions] == [1, 1, 0]
    Enqueuer(client, 0, 60).push_all(submissions)
    # Marked, but not laid out as the encoder lays it out (spaces after the colons).
    odd = json.loads(submissions[0].message())
    odd["headers"]["id"] = odd["properties"]["correlation_id"] = "odd"
    odd["properties"]["delivery_tag"] = "odd-tag"
    client.lpush(submissions[0].list_name, ENCODER_MARK + json.dumps(odd).encode())
    # Marked, in the layout of clients before the properties came first: the body first.
    older = {key: odd[key] for key in ("body", "content-encoding", "content-type", "headers")}
    older["properties"] = {**odd["properties"], "delivery_tag": "older-tag"}
    older["headers"]["id"] = older["properties"]["correlation_id"] = "older"
    compact = json.dumps(older, separators=(",", ":")).encode()
    client.lpush(submissions[0].list_name, ENCODER_MARK + compact)
    # Laid out as the encoder lays it out, its correlation id not its headers' id: read
    # by place, its run count is the correlation id's; decoded, it would be the id's.
    placed = json.loads(submissions[1].message())
    placed["properties"]["correlation_id"] = "by-place"
    placed["headers"]["id"] = "by-decoding"
    placed["properties"]["delivery_tag"] = "placed-tag"
    compact = json.dumps(placed, separators=(",", ":")).encode()
    client.lpush(submissions[0].list_name, ENCODER_MARK + compact)
    client.set(cancelled_key("plain-2"), 1)
    runs = {"plain-1": 2, ids[2]: 1, "odd": 1, "older": 2, "by-place": 3, "by-decoding": 1}
    client.hset(RUNS_HASH, mapping=runs)
    taken = queues.take(10)
    messages = {TaskMessage.decode(t.raw).task_id: t for t in taken}
    assert list(messages) == [*ids, "odd", "older", "by-decoding"]
    assert {i: t.runs for i, t in messages.items()} == {
        "plain-1": 2,
        "plain-2": 0,
        ids[2]: 1,
        "odd": 1,
        "older": 2,
        "by-decoding": 3,
    }
    assert [i for i, t in messages.items() if t.cancelled] == ["plain-2"]
    for job_id, item in messages.items():
        message = TaskMessage.decode(item.raw)
        assert message_tag(item.delivery_tag) == message.properties["delivery_tag"]
        assert client.zscore("unacked_index", item.delivery_tag) is not None
        stored = json.loads(client.hget("unacked", item.delivery_tag))
        assert stored == [json.loads(item.raw), "", "aimass.tiny"], job_id
    client.close()


def test_one_take_records_each_message_under_its_own_exchange_and_routing_key(
    redis_url: str,
) -> None:
    """A take over several models' lists writes the end of kombu's entry (exchange,
    routing key) once per routing key: each message's entry still names its own, as
    kombu's restore reads it, whichever came first in the take."""
    from aimass.producer.enqueue import Enqueuer
    from aimass.producer.submission import Submission
    from aimass.protocol.messages import TaskMessage
    from aimass.worker.redis_queue import ModelQueues
    from tests.support.tiny_models import row_image

    client = redis.Redis.from_url(redis_url)
    queues = ModelQueues(client, ["rk-a", "rk-b"], "tester", 60)
    submissions = [
        Submission.classify(row_image(1), model=model, job_id=f"{model}-{i}")
        for model in ("rk-a", "rk-b")
        for i in range(3)
    ]
    enqueuer = Enqueuer(client, 0, 60)
    enqueuer.push_all(submissions[:3])
    enqueuer.push_all(submissions[3:])
    # Through an exchange of their own, onto rk-b's lists: decoded, and recorded as sent.
    # One is taken before rk-a's messages (its list's priority is served first), one after.
    expected = {s.job_id: ("", f"aimass.{s.model}") for s in submissions}
    for job_id, target in (("routed-1", "aimass.rk-b"), ("routed-2", submissions[3].list_name)):
        routed = json.loads(submissions[0].message())
        routed["headers"]["id"] = routed["properties"]["correlation_id"] = job_id
        routed["properties"]["delivery_tag"] = f"{job_id}-tag"
        routed["properties"]["delivery_info"] = {"exchange": "ex", "routing_key": "aimass.rk-a"}
        client.lpush(target, json.dumps(routed))
        expected[job_id] = ("ex", "aimass.rk-a")
    taken = queues.take(10)
    assert len(taken) == 8
    assert str(TaskMessage.decode(taken[0].raw).task_id) == "routed-1"
    assert str(TaskMessage.decode(taken[-1].raw).task_id) == "routed-2"
    for item in taken:
        job_id = TaskMessage.decode(item.raw).task_id
        stored = json.loads(client.hget("unacked", item.delivery_tag))
        assert stored == [json.loads(item.raw), *expected.pop(str(job_id))], job_id
    assert expected == {}
    client.close()


def test_kombu_s_index_of_taken_messages_stays_a_skip_list(redis_url: str) -> None:
    """Short members would make Redis keep the index as one flat list, where each
    insertion and removal goes through every job in flight: the take script's tags are
    longer than that (``zset-max-ziplist-value``, 64 bytes by default)."""
    from aimass.worker.redis_queue import ModelQueues

    client = redis.Redis.from_url(redis_url)
    assert int(client.config_get("zset-max-ziplist-value")["zset-max-ziplist-value"]) == 64
    queues = ModelQueues(client, ["short-tags"], "tester", 60)
    client.lpush(
        "aimass.short-tags",
        *(
            json.dumps(
                {"headers": {"id": f"j{i}"}, "body": "e30=", "properties": {"delivery_tag": t}}
            )
            for i, t in enumerate(["a", "a#", "a#-", "x" * 64, "y" * 70])
        ),
    )
    client.lpush("aimass.short-tags", json.dumps({"headers": {"id": "untagged"}, "body": ""}))
    taken = queues.take(10)
    assert len({t.delivery_tag for t in taken}) == 6  # no two tags pad alike
    assert client.object("encoding", "unacked_index") == b"skiplist"
    assert client.zcard("unacked_index") == client.hlen("unacked") == 6
    client.close()
