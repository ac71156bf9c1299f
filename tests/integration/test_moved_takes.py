"""A large take in two steps (worker/held.py): its messages moved onto the worker's hold
inside Redis, then read and recorded by the worker. It must record exactly what the
one-step take script records, lose nothing when the worker dies or Redis fails between
the steps, and put a dead worker's hold back in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aimass.protocol.keys import HOLDS_INDEX, PLAIN
from aimass.worker import held
from aimass.worker.redis_queue import ModelQueues, Settlement, Taken
from aimass.worker.restore import Restorer
from tests.support.malformed_corpus import build_corpus
from tests.support.moved_takes import moves, moves_on

pytestmark = pytest.mark.integration

LIST = "aimass.tiny"


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def queues(store: redis.Redis, move_takes_at: int, max_bytes: int = 32 * 1024 * 1024) -> Any:
    q = ModelQueues(store, ["tiny"], "w1", 3600, max_bytes, move_takes_at=move_takes_at)
    q._behind[""] = True  # as after a take that left a backlog: this one may move
    return q


def fresh(tag: str | bytes) -> str | bytes:
    """A tag made for a message without one differs between the two takes by design
    (a counter in the script, a uuid in the worker): compared as what it is."""
    text = tag.decode("utf-8", "surrogateescape") if isinstance(tag, bytes) else tag
    made = text.startswith("aimass-") and "#" in text
    if not made:
        return tag
    return b"<fresh>" if isinstance(tag, bytes) else "<fresh>"


def state(store: redis.Redis, taken: list[Taken]) -> dict[str, Any]:
    return {
        "taken": [(fresh(t.delivery_tag), t.raw, t.runs, t.queue, t.cancelled) for t in taken],
        "unacked": sorted((fresh(k), v) for k, v in store.hgetall("unacked").items()),
        "index": sorted(fresh(k) for k in store.zrange("unacked_index", 0, -1)),
        "left": store.lrange(LIST, 0, -1),
        "keys": sorted(
            k for k in store.keys("*") if not k.startswith((b"aimass:job:", b"celery-task-meta-"))
        ),
    }


def test_cjson_strings_are_written_as_redis_writes_them(store: redis.Redis) -> None:
    samples = [bytes([c]) for c in range(256)] + [b"", b"aimass.tiny", b'a/b\\c"d\x7f\xc3\xa9']
    encode = "local out = {} for i, v in ipairs(ARGV) do out[i] = cjson.encode(v) end return out"
    assert [held.cjson_string(s) for s in samples] == store.eval(encode, 0, *samples)


def test_a_moved_take_records_the_corpus_as_the_one_step_take_does(store: redis.Redis) -> None:
    """Every message of the malformed corpus (envelopes that lie, bodies that are not
    strings, tags that are not UTF-8, messages past the size cap), taken in one step and
    moved, gives the same messages, tags, run counts, cancel marks and kombu bookkeeping,
    byte for byte."""
    messages = [case.message for case in build_corpus()]
    store.hset("aimass:runs", mapping={"corpus-runs": 2})
    store.set("aimass:cancelled:corpus-cancelled", 1)
    for job_id in ("corpus-runs", "corpus-cancelled"):
        messages.append(
            b'{"properties": {"delivery_tag": "t-' + job_id.encode() + b'"}, '
            b'"headers": {"id": "' + job_id.encode() + b'"}, "body": "e30="}'
        )
    seen = []
    for move_takes_at in (0, 1):
        store.delete("unacked", "unacked_index", LIST)
        store.rpush(LIST, b"one more than the take: a move needs a backlog")
        store.rpush(LIST, *reversed(messages))  # the first message is the oldest
        q = queues(store, move_takes_at, max_bytes=4096)  # some of the corpus is larger
        before = moves(store)
        taken = q.take(len(messages))
        assert moves(store) - before == move_takes_at
        seen.append(state(store, taken))
    one_step, moved = seen
    assert len(moved["taken"]) == len(messages)
    assert moved == one_step
    marks = {raw: (runs, cancelled) for _, raw, runs, _, cancelled in moved["taken"]}
    assert marks[messages[-2]] == (2, False) and marks[messages[-1]] == (0, True)


def test_a_take_moves_only_where_the_last_one_left_a_backlog(store: redis.Redis) -> None:
    """A move where the worker is behind: its last take, of any size, was full and left
    jobs waiting; and this take, of at least the least to move, finds more than it may
    carry. A closed loop whose takes empty the queue never moves, nor asks to."""
    store.rpush(LIST, *[b'{"headers": {"id": "j%d"}}' % n for n in range(80)])
    q = ModelQueues(store, ["tiny"], "w1", 3600, move_takes_at=16)
    before = moves(store)
    assert len(q.take(20)) == 20 and q._behind[""]  # the first take: one step
    assert len(q.take(10)) == 10 and q._behind[""]  # under the least to move: one step
    assert moves(store) == before
    assert len(q.take(20)) == 20  # moved: 50 waiting
    assert moves(store) == before + 1 and q._behind[""]
    assert len(q.take(20)) == 20  # 30 waiting: moved
    assert len(q.take(10)) == 10 and not q._behind[""]  # took the last 10: one step
    assert moves(store) == before + 2
    store.rpush(LIST, *[b'{"headers": {"id": "k%d"}}' % n for n in range(30)])
    assert len(q.take(64)) == 30 and not q._behind[""]  # not full
    assert len(q.take(20)) == 0
    store.rpush(LIST, *[b'{"headers": {"id": "m%d"}}' % n for n in range(30)])
    assert len(q.take(4)) == 4 and q._behind[""]  # full, 26 left behind
    assert len(q.take(20)) == 20 and q._behind[""]  # moved
    assert moves(store) == before + 3
    assert len(q.take(20)) == 6  # asked, but 6 waiting: one step
    assert moves(store) == before + 3 and not q._behind[""]
    assert not store.keys("aimass:hold:*") and not store.exists(HOLDS_INDEX)
    assert store.hlen("unacked") == 140 and store.zcard("unacked_index") == 140


def test_a_worker_dead_between_the_steps_has_its_hold_put_back_in_order(
    store: redis.Redis,
) -> None:
    messages = [b'{"headers": {"id": "j%d"}}' % n for n in range(30)]
    store.rpush(LIST, *reversed(messages))  # j0 is the oldest
    q = queues(store, 8)
    hold = q._new_hold("")
    keys, args = q._take_args("", 20, hold)
    flat = q._take(keys=keys, args=args)
    assert int(flat[0]) == 1  # moved; the worker dies before it records them
    assert store.lrange(hold, 0, -1) == messages[:20]
    assert store.lrange(LIST, 0, -1) == list(reversed(messages[20:]))
    restorer = Restorer(store, PLAIN, visibility_timeout_s=60)
    assert restorer.sweep() == 0  # not yet due
    assert Restorer(store, PLAIN, visibility_timeout_s=0).sweep() == 20
    assert not store.exists(hold) and not store.exists(HOLDS_INDEX)
    again = ModelQueues(store, ["tiny"], "w2", 3600).take(30)
    assert [t.raw for t in again] == messages  # oldest first, nothing lost or repeated


def test_a_record_that_failed_is_made_before_anything_else_is_taken(
    store: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [b'{"headers": {"id": "j%d"}}' % n for n in range(30)]
    store.rpush(LIST, *reversed(messages))
    q = queues(store, 8)
    record = held.record
    failures = iter([redis.ConnectionError("Connection reset by peer")])

    def record_once_failing(*args: Any, **kwargs: Any) -> Any:
        for failure in failures:
            raise failure
        return record(*args, **kwargs)

    monkeypatch.setattr(held, "record", record_once_failing)
    with pytest.raises(redis.ConnectionError):
        q.take(20)
    (hold,) = store.keys("aimass:hold:*")
    assert store.llen(hold) == 20 and store.hlen("unacked") == 0
    assert store.zcard(HOLDS_INDEX) == 1
    taken = q.take(20)  # the consumer's next try
    assert [t.raw for t in taken] == messages[:20]
    assert store.hlen("unacked") == 20 and not store.exists(hold, HOLDS_INDEX)
    assert [t.raw for t in q.take(20)] == messages[20:]


def test_moved_takes_on_a_cluster_record_every_shards_jobs(cluster_url: str) -> None:
    """On a Redis Cluster each shard's take moves onto a hold in its own slot and records
    in a transaction there; a dead worker's holds go back on every shard."""
    from aimass.producer.client import Client
    from aimass.producer.submission import Submission
    from aimass.protocol.connections import connect
    from aimass.protocol.shards import keyspace
    from tests.support.tiny_models import row_image

    client = connect(cluster_url)
    space = keyspace(client)
    with Client(cluster_url, max_queue_depth=0) as producer:
        jobs = producer.submit_many(
            [Submission.classify(row_image(i % 8), model="tiny") for i in range(300)]
        )
    q = ModelQueues(client, ["tiny"], "w1", 3600, space=space, move_takes_at=4)
    q._behind = dict.fromkeys(space.tags, True)
    taken: list[Taken] = []
    while len(taken) < 300:
        taken += q.take(40)
    assert moves_on(client) > 0
    assert sorted(held.read(t.raw, b"", 1 << 20).job_id for t in taken) == sorted(  # type: ignore[union-attr]
        j.id.encode() for j in jobs
    )
    assert sum(client.hlen(space.bookkeeping(t)[0]) for t in space.tags) == 300
    assert not any(client.exists(space.bookkeeping(t)[4]) for t in space.tags)
    assert sum(client.llen(name) for t in space.tags for name in space.lists("tiny", t)) == 0
    q.settle([Settlement(t.delivery_tag, None, None) for t in taken])
    assert sum(client.hlen(space.bookkeeping(t)[0]) for t in space.tags) == 0

    with Client(cluster_url, max_queue_depth=0) as producer:
        more = producer.submit_many(
            [Submission.classify(row_image(i % 8), model="tiny") for i in range(60)]
        )
    dying = ModelQueues(client, ["tiny"], "w2", 3600, space=space, move_takes_at=4)
    for tag in space.tags:  # each shard's take moves, and the worker dies before the record
        keys, args = dying._take_args(tag, 5, dying._new_hold(tag))
        assert int(dying._take(keys=keys, args=args)[0]) == 1
    assert Restorer(client, space, visibility_timeout_s=0).sweep() == 5 * len(space.tags)
    again = ModelQueues(client, ["tiny"], "w3", 3600, space=space).take(100)
    assert sorted(held.read(t.raw, b"", 1 << 20).job_id for t in again) == sorted(  # type: ignore[union-attr]
        j.id.encode() for j in more
    )


def test_a_moved_take_writes_started_records_where_the_worker_tracks_them(
    store: redis.Redis,
) -> None:
    messages = [b'{"headers": {"id": "j%d"}}' % n for n in range(30)]
    store.rpush(LIST, *reversed(messages))
    store.set("celery-task-meta-j1", b'{"status": "SUCCESS"}')  # an answer is never replaced
    q = ModelQueues(store, ["tiny"], "w1", 3600, track_started=True, move_takes_at=8)
    q._behind[""] = True
    before = moves(store)
    assert len(q.take(20)) == 20
    assert moves(store) == before + 1
    started = [store.get(f"celery-task-meta-j{n}") for n in range(30)]
    assert started[1] == b'{"status": "SUCCESS"}'
    assert all(b'"STARTED"' in record for record in started[:1] + started[2:20])  # type: ignore[operator]
    assert started[20:] == [None] * 10
