"""The worker under load, with bad input, when killed, and its health check."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from aimass.producer.client import Client, JobStatus
from aimass.protocol.errors import InvalidInput, PayloadTooLarge
from tests.support.processes import aimass_command, child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


def submit_backlog(client: Client, count: int) -> list:
    return [client.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(count)]


def test_batches_larger_than_one_form_under_load(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        jobs = submit_backlog(client, 200)  # waiting before any worker runs
        start_worker(redis_url, model_repository)
        results = [job.result(timeout=60) for job in jobs]
    sizes = Counter(r["timing"]["batch_size"] for r in results)
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 16  # the manifest's max_batch_size
    assert [r["predictions"][0][0]["label"] for r in results] == [str(i % 8) for i in range(200)]


def test_a_bad_input_fails_alone_while_its_batch_mates_succeed(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        before = submit_backlog(client, 20)
        bad = client.classify(b"\x89PNG\r\n\x1a\n" + b"\0" * 40, model="tiny")
        after = submit_backlog(client, 20)
        start_worker(redis_url, model_repository)
        good = [job.result(timeout=60) for job in before + after]
        with pytest.raises(InvalidInput, match="could not be decoded"):
            bad.result(timeout=60)
    assert max(r["timing"]["batch_size"] for r in good) > 1
    assert all(r["predictions"][0][0]["label"] == str(i % 8) for i, r in enumerate(good[:20]))


def test_a_worker_killed_under_load_loses_no_job(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    fast_restore = {"AIMASS_VISIBILITY_TIMEOUT_S": "2"}
    with Client(redis_url) as client:
        jobs = submit_backlog(client, 600)
        # Slow batches (each waits out a 300 ms deadline) keep jobs in flight.
        first = start_worker(
            redis_url,
            model_repository,
            "--max-batch-size",
            "1000",
            "--max-queue-delay-ms",
            "300",
            "--concurrency",
            "50",
            **fast_restore,
        )
        while sum(job.status() is JobStatus.succeeded for job in jobs[:100]) < 20:
            time.sleep(0.01)
        first.kill()  # SIGKILL: no chance to acknowledge or requeue
        unacked = redis.Redis.from_url(redis_url).hlen("unacked")
        start_worker(redis_url, model_repository, **fast_restore)
        results = [job.result(timeout=90) for job in jobs]
    assert len(results) == 600
    assert [r["predictions"][0][0]["label"] for r in results] == [str(i % 8) for i in range(600)]
    # The kill really left jobs in flight, and they were all answered.
    assert unacked > 0
    assert redis.Redis.from_url(redis_url).hlen("unacked") == 0


def test_sigterm_finishes_the_jobs_in_flight(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        jobs = submit_backlog(client, 300)
        worker = start_worker(redis_url, model_repository, "--max-batch-size", "2")
        while not any(job.status() is JobStatus.succeeded for job in jobs[:50]):
            time.sleep(0.01)
        assert worker.stop(timeout=30) == 0
        store = redis.Redis.from_url(redis_url)
        statuses = Counter(job.status() for job in jobs)
        # Everything it took was answered and acknowledged; the rest is still queued.
        assert store.hlen("unacked") == 0
        assert set(statuses) <= {JobStatus.succeeded, JobStatus.queued}
        assert statuses[JobStatus.succeeded] + store.llen("aimass.tiny") == 300


def test_check_is_zero_with_a_worker_up_and_non_zero_without(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    def check() -> int:
        return subprocess.run(
            [*aimass_command(), "check"], env=child_env(redis_url), capture_output=True, timeout=30
        ).returncode

    assert check() != 0
    worker = start_worker(redis_url, model_repository)
    assert check() == 0
    worker.stop()
    assert check() != 0


def test_a_worker_asked_for_a_gpu_that_runs_on_the_cpu_says_so_and_fails_check(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    """GPU 7 is not there (CUDA_VISIBLE_DEVICES=7 leaves no device, and without CUDA
    libraries the provider cannot start at all): ONNX Runtime falls back to the CPU."""

    def run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*aimass_command(), *command],
            env=child_env(redis_url, **env),
            capture_output=True,
            text=True,
            timeout=30,
        )

    worker = start_worker(redis_url, model_repository, "--devices", "7")
    info = worker.heartbeat()
    assert info is not None
    assert (info.requested_device, info.device, info.cpu_fallback) == (
        "gpu:7",
        "cpu",
        True,
    )
    with Client(redis_url) as client:  # it serves, only slower than planned
        assert (
            client.classify(row_image(3), model="tiny").result(timeout=30)["predictions"][0][0][
                "label"
            ]
            == "3"
        )
    check = run("check")
    assert check.returncode == 1 and "gpu:7 but runs on the CPU" in check.stderr
    assert run("check", AIMASS_ALLOW_CPU_FALLBACK="1").returncode == 0
    assert "CPU FALLBACK: gpu:7 was asked for" in run("workers").stdout


def test_workers_warns_when_redis_is_near_its_memory_limit(redis_url: str) -> None:
    store = redis.Redis.from_url(redis_url)
    used = int(store.info("memory")["used_memory"])
    store.config_set("maxmemory", int(used * 1.05))
    try:
        near = subprocess.run(
            [*aimass_command(), "workers"],
            env=child_env(redis_url),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        store.config_set("maxmemory", 0)
    assert "WARNING: Redis uses" in near.stderr and "refuses new jobs" in near.stderr
    calm = subprocess.run(
        [*aimass_command(), "workers", "--json"],
        env=child_env(redis_url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "WARNING" not in calm.stderr
    assert json.loads(calm.stdout)["redis_memory"]["max_bytes"] == 0


def test_a_result_over_the_size_cap_fails_its_job_and_the_others_are_stored(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    start_worker(redis_url, model_repository, AIMASS_MAX_RESULT_BYTES="4000")
    with Client(redis_url) as client:
        small = client.generate(model="tiny-gan", count=1, labels=[3], format="png")
        large = client.generate(model="tiny-gan", count=16, labels=[3] * 16, format="tensor")
        assert small.result(timeout=30)["labels"] == [3]
        with pytest.raises(PayloadTooLarge, match="AIMASS_MAX_RESULT_BYTES"):
            large.result(timeout=30)
