"""Cancelling jobs: a queued job never runs, a job waiting in a worker's batch is dropped
before the batch starts, and either reads cancelled and raises JobCancelled."""

from __future__ import annotations

import random
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from aimass.embedded_redis import free_port
from aimass.producer.client import Client, JobStatus
from aimass.producer.submission import Submission
from aimass.protocol.errors import JobCancelled, ModelError
from aimass.protocol.manifest import ModelKind
from tests.support.hanging_model import hanging_classifier
from tests.support.processes import aimass_command, child_env
from tests.support.tiny_models import publish, row_image

pytestmark = pytest.mark.integration


def jobs_counted(port: int, outcome: str) -> float:
    """aimass_jobs_total of one outcome, summed over models and reasons."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    return sum(
        float(value)
        for value in re.findall(
            rf'^aimass_jobs_total{{[^}}]*outcome="{outcome}"[^}}]*}} (\S+)$', text, re.MULTILINE
        )
    )


def test_cancelled_queued_jobs_never_run_and_the_others_are_answered(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        jobs = client.submit_many(
            Submission.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(1000)
        )
        chosen = set(random.Random(3).sample(range(1000), 100))
        assert all(jobs[i].cancel() for i in chosen)
        assert {jobs[i].status() for i in chosen} == {JobStatus.cancelled}
        port = free_port()
        start_worker(redis_url, model_repository, "--metrics-port", str(port))
        kept = [i for i in range(1000) if i not in chosen]
        results = client.wait([jobs[i] for i in kept], timeout=120)
        assert [r["predictions"][0][0]["label"] for r in results] == [str(i % 8) for i in kept]
        for i in chosen:
            with pytest.raises(JobCancelled):
                jobs[i].result(timeout=5)
        deadline = time.monotonic() + 10
        while jobs_counted(port, "cancelled") < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert jobs_counted(port, "succeeded") == 900  # not one of the 100 ran
        assert jobs_counted(port, "cancelled") == 100
        assert not jobs[next(iter(chosen))].cancel()  # already cancelled: nothing to do


def test_a_job_waiting_in_a_batch_is_dropped_before_the_batch_runs(
    redis_url: str, tmp_path: Path, start_worker
) -> None:
    repository = tmp_path / "models"
    publish(
        repository,
        "tiny-hang",
        1,
        ModelKind.classify,
        hanging_classifier(),
        max_batch_size=1000,
        max_queue_delay_ms=0,
    )
    port = free_port()
    # Started records say when the worker holds the jobs.
    start_worker(
        redis_url,
        repository,
        "--metrics-port",
        str(port),
        AIMASS_JOB_TIME_LIMIT_S="4",
        AIMASS_TRACK_STARTED="1",
    )
    black = row_image(0) * 0
    with Client(redis_url) as client:
        hanging = client.classify(row_image(3), model="tiny-hang")  # holds the batch thread
        while hanging.status() is not JobStatus.started:
            time.sleep(0.02)
        waiting = [client.classify(black, model="tiny-hang") for _ in range(20)]
        while any(job.status() is not JobStatus.started for job in waiting):
            time.sleep(0.02)  # all taken: in the worker, waiting for the next batch
        assert all(job.cancel() for job in waiting[:5])
        with pytest.raises(ModelError, match="timed out"):
            hanging.result(timeout=30)
        answered = client.wait(waiting[5:], timeout=30)
        for job in waiting[:5]:
            with pytest.raises(JobCancelled):
                job.result(timeout=5)
    assert all(r["predictions"][0][0]["label"] == "0" for r in answered)
    deadline = time.monotonic() + 10
    while jobs_counted(port, "cancelled") < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs_counted(port, "succeeded") == 15 and jobs_counted(port, "cancelled") == 5


def test_cancel_from_the_shell_says_what_happened(shared_url: str) -> None:
    with Client(shared_url) as client:
        done = client.classify(row_image(1), model="tiny")
        done.result(timeout=30)

    def cancel(*ids: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*aimass_command(), "cancel", *ids],
            env=child_env(shared_url),
            capture_output=True,
            text=True,
            timeout=30,
        )

    finished = cancel(done.id)
    assert finished.returncode == 1 and "had finished (succeeded)" in finished.stderr
    unknown = cancel("no-such-job")
    assert unknown.returncode == 1 and "unknown job" in unknown.stderr


def test_the_asyncio_client_cancels_too(redis_url: str) -> None:
    import asyncio

    from aimass.producer.aio import AsyncClient

    async def scenario() -> tuple[bool, JobStatus, bool]:
        async with AsyncClient(redis_url) as client:
            job = await client.classify(row_image(2), model="tiny")  # no worker: it waits
            cancelled = await job.cancel()
            status = await job.status()
            try:
                await job.result(timeout=5)
            except JobCancelled:
                raised = True
            else:
                raised = False
            return cancelled, status, raised

    assert asyncio.run(scenario()) == (True, JobStatus.cancelled, True)
