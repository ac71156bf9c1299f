"""The poison-job cap's run counts: where they are written (AIMASS_COUNT_RUNS_AT).

"take" (the default): a job's first run is counted in the take's own round trip, so a
batch of first runs starts without waiting for Redis; a job taken with runs behind it
runs alone, and its run is counted as it starts. "start": every run is counted as its
batch starts, a round trip a batch (docs/performance.md, sizing the broker).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from aimass.bench.broker import command_calls
from aimass.embedded_redis import RedisServer
from aimass.producer.client import Client
from aimass.producer.submission import Submission
from aimass.protocol.keys import RUNS_HASH
from aimass.protocol.records import ResultRecord
from aimass.worker.redis_queue import ModelQueues, Settlement
from tests.support.moved_takes import moves
from tests.support.processes import WorkerProcess
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration

LIST = "aimass.counted"


def push(store: redis.Redis, ids: list[str]) -> None:
    store.lpush(
        LIST,
        *(
            json.dumps({"headers": {"id": i, "task": "aimass.classify"}, "body": "e30="})
            for i in ids
        ),
    )


def calls(store: redis.Redis) -> int:
    """Commands Redis has run so far, but for the INFO that reads them."""
    return sum(command_calls(store).values())


def runs(store: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in store.hgetall(RUNS_HASH).items()}


@pytest.mark.parametrize("moved", [False, True])
def test_a_take_counts_first_runs_and_a_batch_of_them_starts_without_a_command(
    tmp_path: Path, moved: bool
) -> None:
    """The take (one step, or moved and recorded: worker/held.py) writes a run of 1 for
    each job with none, and leaves a count behind a job as it is; it hands back the
    counts as they were before it. Counting the runs of a batch of first runs costs no
    command; a job named as taken with runs behind it is counted as it starts."""
    # A Redis of its own: every command counted below is this test's.
    with RedisServer(tmp_path / "redis") as server:
        store = redis.Redis.from_url(server.url)
        ids = [f"c{n}" for n in range(20)]
        push(store, ids)
        store.hset(RUNS_HASH, "c3", 2)
        queues = ModelQueues(
            store, ["counted"], "w1", 60, move_takes_at=16, count_runs_at_take=True
        )
        if moved:
            queues._behind[""] = True  # as after a take that left a backlog: this one moves
        before = moves(store)
        taken = queues.take(16)
        assert moves(store) - before == int(moved)
        assert [t.runs for t in taken] == [2 if n == 3 else 0 for n in range(16)]
        assert runs(store) == {i: 2 if i == "c3" else 1 for i in ids[:16]}

        first = [i for i in ids[:16] if i != "c3"]
        seen = calls(store)
        queues.mark_runs(first[:8])
        queues.mark_runs(first[8:])
        assert calls(store) == seen  # no command counted those runs
        queues.count_at_start("c3")
        queues.mark_runs(["c3"])
        assert runs(store)["c3"] == 3
        queues.mark_runs(["c3"])  # counted once per start it was named for
        assert runs(store)["c3"] == 3

        queues.settle(
            [
                Settlement(t.delivery_tag, i, ResultRecord.success(i, {}))
                for t, i in zip(taken, ids[:16], strict=True)
            ]
        )
        assert runs(store) == {}
        assert not queues._count_at_start


def test_counting_runs_at_start_counts_every_batch_as_it_starts(redis_url: str) -> None:
    """AIMASS_COUNT_RUNS_AT=start: the take writes no count, mark_runs writes each."""
    store = redis.Redis.from_url(redis_url)
    push(store, ["s0", "s1", "s2"])
    queues = ModelQueues(store, ["counted"], "w1", 60, count_runs_at_take=False)
    taken = queues.take(3)
    assert len(taken) == 3 and runs(store) == {}
    queues.mark_runs(["s0", "s1", "s2"])
    assert runs(store) == {"s0": 1, "s1": 1, "s2": 1}


def client_commands_on_runs(url: str, jobs: int) -> int:
    """Commands a client (not a script) sent to the runs hash while a worker answered
    ``jobs`` jobs sent in bulk."""
    seen: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(url) as watching, watching.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                if command["command"] == "PING watched":
                    return
                name, _, rest = command["command"].partition(" ")
                if command.get("client_type") != "lua" and rest.startswith(RUNS_HASH):
                    seen.append(name)  # HSET, HINCRBY (a script's keys are not its first)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(10)
    with Client(url) as client:
        submissions = [Submission.classify(row_image(i % 8), model="tiny") for i in range(jobs)]
        results = client.wait(client.submit_many(submissions), timeout=120)
        assert [r["predictions"][0][0]["label"] for r in results] == [
            str(i % 8) for i in range(jobs)
        ]
        client.redis.execute_command("PING", "watched")
    watcher.join(10)
    assert not watcher.is_alive()
    return len(seen)


@pytest.mark.parametrize("count_runs_at", ["take", "start"])
def test_a_worker_counts_first_runs_in_its_takes_not_in_round_trips_of_their_own(
    tmp_path: Path,
    model_repository: Path,
    start_worker: Callable[..., WorkerProcess],
    count_runs_at: str,
) -> None:
    """Through a real worker: with runs counted at take, no batch of first runs sends
    Redis a command of its own to count them (the take's script does); counted at
    start, batches do. Either way every job is answered and no count is left behind."""
    with RedisServer(tmp_path / "redis") as server:
        start_worker(server.url, model_repository, AIMASS_COUNT_RUNS_AT=count_runs_at)
        commands = client_commands_on_runs(server.url, 300)
        store = redis.Redis.from_url(server.url)
        assert not store.exists(RUNS_HASH)
    if count_runs_at == "take":
        assert commands == 0
    else:
        assert commands > 0
