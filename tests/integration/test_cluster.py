"""aimass on a Redis Cluster: each model's queue sharded over the primaries (one hash tag
per shard), a job's keys on its shard's slot. Jobs spread evenly over the primaries; a
SIGKILLed primary is failed over by the cluster under load and every job is answered
once; cancel, dead letters and ``aimass workers`` work there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from aimass.embedded_cluster import RedisCluster
from aimass.producer.client import Client
from aimass.producer.dead_letters import dead_letters, purge, retry
from aimass.producer.submission import Submission
from aimass.protocol.connections import connect
from aimass.protocol.errors import JobCancelled
from aimass.protocol.heartbeats import live_heartbeats
from aimass.protocol.keys import RESULT_KEY_PREFIX, SHARDS_KEY, shard_tags
from aimass.protocol.shards import keyspace
from tests.support.clusters import need_cluster_redis
from tests.support.failovers import answers_through_failover, failover_jobs, worker_through_failover
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration

JOBS = 3000


def _results_per_primary(cluster: RedisCluster) -> dict[int, int]:
    """How many result keys each primary holds."""
    counts = {}
    for port in cluster.primary_ports():
        with redis.Redis(port=port) as client:
            counts[port] = sum(
                1 for _ in client.scan_iter(match=f"{RESULT_KEY_PREFIX}*", count=1000)
            )
    return counts


@pytest.mark.timeout(300)
def test_jobs_spread_evenly_over_the_cluster_primaries(
    redis_cluster: RedisCluster, cluster_url: str, model_repository: Path, start_worker: Any
) -> None:
    start_worker(cluster_url, model_repository, ready_timeout=90)
    with Client(cluster_url, max_queue_depth=0) as client:
        labels = client.run_many(failover_jobs(JOBS), timeout=240)
        space = keyspace(client.redis)
    assert [r["predictions"][0][0]["label"] for r in labels] == [str(i % 8) for i in range(JOBS)]
    assert space.tags == shard_tags(3)  # one shard per primary by default, recorded once
    assert int(connect(cluster_url).get(SHARDS_KEY)) == 3
    counts = _results_per_primary(redis_cluster)
    assert sum(counts.values()) == JOBS and len(counts) == 3
    for port, count in counts.items():
        assert abs(count - JOBS / 3) <= 0.15 * JOBS / 3, f"primary {port}: {counts}"


@pytest.mark.timeout(300)
def test_cancel_dead_letters_and_workers_on_the_cluster(
    cluster_url: str, model_repository: Path, start_worker: Any
) -> None:
    with Client(cluster_url) as client:
        # Cancelled while queued (no worker yet): it never runs.
        queued = client.classify(row_image(1), model="tiny", top_k=1)
        assert queued.cancel()
        assert queued.status() == "cancelled"
        # A parked job, as a worker leaves it after too many runs: listed, retried, purged.
        job = client.classify(row_image(2), model="tiny", top_k=1)
        space = keyspace(client.redis)
        tag = space.tag(job.id)
        lists = space.lists("tiny", tag)
        name, raw = next(
            (name, raw)
            for name in lists
            for raw in client.redis.lrange(name, 0, -1)
            if job.id.encode() in raw
        )
        assert client.redis.lrem(name, 1, raw) == 1
        client.redis.lpush(f"aimass:dead:tiny{tag}", raw)
        letters = dead_letters(client.redis, "tiny")
        assert [(letter.job_id, letter.shard) for letter in letters] == [(job.id, tag)]
        assert dead_letters(client.redis) == letters
        worker = start_worker(cluster_url, model_repository, ready_timeout=90)
        assert retry(client.redis, letters) == 1
        assert job.result(timeout=60)["predictions"][0][0]["label"] == "2"
        with pytest.raises(JobCancelled):
            queued.result(timeout=5)
        client.redis.lpush(f"aimass:dead:tiny{tag}", raw)
        assert purge(client.redis, "tiny") == 1 and dead_letters(client.redis) == []
        beats = live_heartbeats(client.redis)
        assert len(beats) == 1 and [m.name for m in beats[0].models] == ["tiny", "tiny-gan"]
    listed = subprocess.run(
        [sys.executable, "-m", "aimass.cli", "workers", "--json"],
        env={**os.environ, "REDIS_URL": cluster_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert [w["hostname"] for w in report["workers"]] == [beats[0].hostname]
    assert report["queue_depths"] == {"tiny": 0, "tiny-gan": 0}
    assert worker.alive()


@pytest.mark.timeout(420)
def test_a_cluster_failover_under_load_answers_every_job_once(
    model_repository: Path, tmp_path: Path
) -> None:
    need_cluster_redis()
    cluster = RedisCluster(tmp_path / "cluster").start()
    with worker_through_failover(cluster, model_repository, tmp_path / "worker.log") as worker:
        first_primaries = set(cluster.primary_ports())
        with Client(cluster.url, max_queue_depth=0) as client:
            jobs = client.submit_many(failover_jobs(JOBS))
            killed: list[int] = []
            killer = threading.Thread(
                target=_kill_when_answered,
                daemon=True,
                args=(cluster, jobs[JOBS // 4].id, killed),
            )
            killer.start()
            answered, lost = answers_through_failover(jobs, first_wait_s=120)
            killer.join(60)
        assert killed, "a primary was killed"
        cluster.wait_ok()
        now = set(cluster.primary_ports())
        assert killed[0] not in now and len(now) == 3 and now != first_primaries
        print(
            f"{JOBS} jobs, primary {killed[0]} killed after {JOBS // 4}: {answered} "
            f"answered, {len(lost)} lost: {lost[:10]}"
        )
        assert not lost, f"{len(lost)} jobs lost in the failover: {_where(cluster, lost)}"
        assert answered == JOBS
        assert worker.alive()
        space = keyspace(connect(cluster.url))
        with Client(cluster.url) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                client.redis.hlen(space.bookkeeping(tag)[0]) for tag in space.tags
            ):
                time.sleep(0.5)
            assert [client.redis.hlen(space.bookkeeping(t)[0]) for t in space.tags] == [0, 0, 0]


def _where(cluster: RedisCluster, job_ids: list[str]) -> list[dict[str, Any]]:
    """What the cluster holds of these jobs: for a failure message."""
    client = connect(cluster.url)
    space = keyspace(client)
    found = []
    for job_id in job_ids[:5]:
        tag = space.tag(job_id)
        queued = [
            name
            for name in space.lists("tiny", tag)
            if any(job_id.encode() in raw for raw in client.lrange(name, 0, -1))
        ]
        unacked = [
            key
            for key, raw in client.hgetall(space.bookkeeping(tag)[0]).items()
            if job_id.encode() in raw
        ]
        found.append(
            {
                "id": job_id,
                "tag": tag,
                "result": client.get(space.result_key(job_id)),
                "submitted": client.exists(space.submitted_key(job_id)),
                "queued": queued,
                "unacked": unacked,
                "runs": client.hget(space.bookkeeping(tag)[2], job_id),
            }
        )
    return found


def _kill_when_answered(cluster: RedisCluster, job_id: str, killed: list[int]) -> None:
    with Client(cluster.url) as client:
        job = client.job(job_id)
        deadline = time.monotonic() + 120
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.05)
    port = cluster.primary_ports()[0]
    cluster.node(port).kill()
    killed.append(port)


def test_jobs_held_past_the_visibility_timeout_go_back_on_every_shard(cluster_url: str) -> None:
    from aimass.worker.redis_queue import ModelQueues
    from aimass.worker.restore import Restorer

    with Client(cluster_url, max_queue_depth=0) as client:
        space = keyspace(client.redis)
        jobs = client.submit_many(
            Submission.classify(row_image(i % 8), model="tiny", top_k=1, priority=p)
            for i, p in enumerate([0, 4, 9] * 20)
        )
        before = {
            name: client.redis.lrange(name, 0, -1)
            for tag in space.tags
            for name in space.lists("tiny", tag)
        }
        # A worker takes them all and dies holding them.
        queues = ModelQueues(client.redis, ["tiny"], "dead-worker", 60, space=space)
        taken = queues.take(1000)
        assert len(taken) == len(jobs) == 60
        assert {t.queue for t in taken} == {space.queue("tiny", tag) for tag in space.tags}
        assert sum(client.redis.hlen(space.bookkeeping(t)[0]) for t in space.tags) == 60
        assert Restorer(client.redis, space, 3600).sweep() == 0  # not yet past the timeout
        assert Restorer(client.redis, space, 0).sweep() == 60
        after = {name: client.redis.lrange(name, 0, -1) for name in before}
        # Each message is back on its shard's list of its priority, byte for byte.
        assert {n: sorted(v) for n, v in after.items()} == {n: sorted(v) for n, v in before.items()}
        assert sum(client.redis.hlen(space.bookkeeping(t)[0]) for t in space.tags) == 0


@pytest.mark.timeout(300)
def test_a_sequence_streams_from_its_shard_on_the_cluster(
    cluster_url: str, tmp_path: Path, start_worker: Any
) -> None:
    """A sequence job's stream lies on its shard's slot (the key readers compute from the
    id), and the pieces read there, sync and asyncio, make the stored text."""
    import asyncio

    from aimass.producer.aio import AsyncClient
    from tests.support.sequence_model import publish_sequence_model, reference_greedy

    publish_sequence_model(tmp_path / "models")
    start_worker(cluster_url, tmp_path / "models", ready_timeout=90)
    with Client(cluster_url) as client:
        jobs = [
            client.sequence(f"{i} = ", model="tiny-rnn", max_tokens=200, seed=i, stream=True)
            for i in range(6)
        ]
        pieces = [list(job.stream(timeout=60)) for job in jobs]
        texts = [job.result(timeout=10)["text"] for job in jobs]
        space = keyspace(client.redis)
        streams = [space.stream_key(job.id) for job in jobs]
        assert all(client.redis.exists(key) for key in streams)
    assert ["".join(p) for p in pieces] == texts and all(len(t) == 200 for t in texts)
    assert len({key.split("}")[0] for key in streams}) > 1  # several shards were used

    async def read() -> tuple[str, str]:
        async with AsyncClient(cluster_url) as client:
            job = await client.sequence(
                "def ", model="tiny-rnn", max_tokens=50, temperature=0, stream=True
            )
            text = "".join([piece async for piece in job.stream(timeout=60)])
            return text, (await job.result(timeout=10))["text"]

    streamed, stored = asyncio.run(read())
    assert streamed == stored == reference_greedy("def ", 50)


def test_a_cluster_that_cannot_start_stops_the_nodes_it_started(tmp_path: Path) -> None:
    """Its last node given the first one's port for its cluster bus: that node cannot
    start, and the nodes started before it are stopped, not left running."""
    need_cluster_redis()
    cluster = RedisCluster(tmp_path)
    bus = cluster.nodes[-1].extra_args.index("--cluster-port") + 1
    cluster.nodes[-1].extra_args[bus] = str(cluster.nodes[0].port)
    with pytest.raises(RuntimeError, match="Address already in use"):
        cluster.start()
    exited = [
        node.process is not None and node.process.poll() is not None for node in cluster.nodes
    ]
    assert exited == [True] * len(cluster.nodes)
