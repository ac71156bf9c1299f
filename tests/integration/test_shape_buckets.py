"""Shape-stable batching through a real worker, with sessions that cost what the CUDA
provider's cost: 40 ms for a run whose input shape differs from the session's previous
run (tests/support/shape_sensitive.py). With buckets, no session ever sees a second
shape, so a job at concurrency 1 pays nothing; without them, nearly every job pays."""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from aimass.producer.client import Client
from aimass.worker.buckets import bucket_for, default_buckets
from tests.support.processes import WorkerProcess
from tests.support.shape_sensitive import LOG_ENV, PENALTY_S
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration

MAX_BATCH = 16  # tiny's manifest
BUCKETS = default_buckets(MAX_BATCH)  # 1, 2, 4, 8, 16
# Image counts whose neighbours always differ: every job changes the batch size.
COUNTS = [1, 3, 2, 5, 1, 4, 7, 2, 16, 1, 9, 3, 6, 1, 12, 2] * 2


def start_shape_sensitive(
    redis_url: str, repository: Path, folder: Path, buckets: str, *args: str
) -> tuple[WorkerProcess, Path]:
    shapes = folder / f"shapes-{buckets}.jsonl"
    worker = WorkerProcess(
        redis_url,
        repository,
        folder / f"worker-{buckets}.log",
        args=["--models", "tiny,tiny-gan", *args],
        env={"AIMASS_BATCH_BUCKETS": buckets, LOG_ENV: str(shapes)},
        command=[sys.executable, "-m", "tests.support.shape_sensitive"],
    )
    return worker.start(90), shapes


def shapes_by_session(path: Path) -> tuple[dict[int, set[tuple[int, ...]]], int]:
    """Each session's shapes, and how many runs changed a session's shape."""
    sessions: dict[int, set[tuple[int, ...]]] = defaultdict(set)
    changes = 0
    for line in path.read_text().splitlines():
        event = json.loads(line)
        sessions[event["session"]].add(tuple(event["shape"]))
        changes += event["changed"]
    return sessions, changes


def one_at_a_time(client: Client, counts: list[int]) -> list[float]:
    """Classify jobs of ``counts`` images, each after the previous one's answer; check
    every answer and return the latencies."""
    latencies = []
    for count in counts:
        images = [row_image(i % 8) for i in range(count)]
        started = time.perf_counter()
        result = client.classify(images, model="tiny", top_k=1).result(timeout=30)
        latencies.append(time.perf_counter() - started)
        assert [p[0]["label"] for p in result["predictions"]] == [str(i % 8) for i in range(count)]
    return latencies


def test_shape_buckets_keep_every_session_on_one_shape_at_concurrency_1(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    worker, shapes = start_shape_sensitive(redis_url, model_repository, tmp_path, "on")
    try:
        with Client(redis_url) as client:
            client.classify([row_image(0)], model="tiny").result(timeout=30)  # warm the path
            latencies = one_at_a_time(client, COUNTS)
            result = client.classify([row_image(1)] * 3, model="tiny").result(timeout=30)
    finally:
        worker.stop()
    sessions, changes = shapes_by_session(shapes)
    assert changes == 0, f"{changes} runs changed a session's shape: {dict(sessions)}"
    assert all(len(seen) == 1 for seen in sessions.values()), dict(sessions)
    # One session per bucket of each model, each built and warmed for its size.
    tiny = sorted(next(iter(seen))[0] for seen in sessions.values() if len(next(iter(seen))) == 4)
    assert tiny == list(BUCKETS)
    p50 = statistics.median(latencies)
    assert p50 < PENALTY_S / 2, f"p50 {p50 * 1000:.1f} ms at concurrency 1"
    # The padding (3 images ran as a batch of 4) reaches neither the result nor its count.
    assert len(result["predictions"]) == 3
    assert result["timing"]["batch_size"] == 3
    assert result["timing"]["bucket"] == bucket_for(3, BUCKETS) == 4


def test_without_shape_buckets_the_stand_in_makes_nearly_every_job_pay(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    """The control: the same jobs on exact-size batches pay the stand-in's 40 ms."""
    worker, shapes = start_shape_sensitive(redis_url, model_repository, tmp_path, "off")
    try:
        with Client(redis_url) as client:
            latencies = one_at_a_time(client, COUNTS)
    finally:
        worker.stop()
    _, changes = shapes_by_session(shapes)
    assert changes >= len(COUNTS) - 1
    assert statistics.median(latencies) >= PENALTY_S


def test_shape_buckets_under_load_pad_batches_and_never_leak_the_padding(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    rng = random.Random(12)
    counts = [rng.randint(1, 6) for _ in range(240)]
    worker = None
    try:
        with Client(redis_url) as client:
            # A backlog waiting before the worker starts: its batches mix jobs of every size.
            jobs = [
                client.classify(
                    [row_image((i + j) % 8) for j in range(count)], model="tiny", top_k=1
                )
                for i, count in enumerate(counts)
            ]
            generated = [
                client.generate(
                    model="tiny-gan", count=n, labels=list(range(n)), seed=n, format="tensor"
                )
                for n in (1, 3, 5, 6, 7)
            ]
            worker, shapes = start_shape_sensitive(
                redis_url, model_repository, tmp_path, "on", "--max-queue-delay-ms", "20"
            )
            results = [job.result(timeout=60) for job in jobs]
            images = [job.result(timeout=60) for job in generated]
    finally:
        if worker is not None:
            worker.stop()
    for i, (count, result) in enumerate(zip(counts, results, strict=True)):
        assert [p[0]["label"] for p in result["predictions"]] == [
            str((i + j) % 8) for j in range(count)
        ]
    assert [len(r["images"]) for r in images] == [1, 3, 5, 6, 7]
    assert [r["labels"] for r in images] == [list(range(n)) for n in (1, 3, 5, 6, 7)]
    batch_sizes = {r["timing"]["batch_size"] for r in results}
    assert max(batch_sizes) > 6, "jobs were batched together"
    assert all(
        r["timing"]["bucket"] in BUCKETS
        and r["timing"]["bucket"] >= min(r["timing"]["batch_size"], MAX_BATCH)
        for r in results
    )
    sessions, changes = shapes_by_session(shapes)
    assert changes == 0, f"{changes} runs changed a session's shape"
    assert all(len(seen) == 1 for seen in sessions.values())


def test_a_worker_sweeps_batch_sizes_on_its_own_device_and_buckets_follow(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    """AIMASS_BATCH_SWEEP=on (on a GPU, the default where the manifest gives no GPU
    limit): the batch limit is measured at start-up on the worker's device, each bucket
    warmed until its run time settles, and the heartbeat says so."""
    worker = WorkerProcess(
        redis_url,
        model_repository,
        tmp_path / "worker.log",
        args=["--models", "tiny", "--batch-buckets", "on"],
        env={"AIMASS_BATCH_SWEEP": "on"},
    ).start(90)
    try:
        beat = worker.heartbeat()
        with Client(redis_url) as client:
            result = client.classify([row_image(3)] * 5, model="tiny", top_k=1).result(30)
    finally:
        worker.stop()
    assert beat is not None
    (tiny,) = beat.models
    limit = tiny.max_batch_size
    assert tiny.batch_limit_source == "sweep" and limit in default_buckets(256)
    assert tiny.buckets == list(default_buckets(limit))
    assert sorted(map(int, tiny.settled_ms)) == tiny.buckets
    assert [p[0]["label"] for p in result["predictions"]] == ["3"] * 5
    assert f"max batch {limit} from the sweep" in worker.log_path.read_text()
