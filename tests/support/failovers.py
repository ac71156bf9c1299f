"""What a failover test runs and asks of every job: a worker on a Redis set that fails
over, jobs of ``tiny``, each answered once with the right label."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from aimass.producer.client import Job
from aimass.producer.submission import Submission
from aimass.protocol.errors import AimassError, JobTimeout
from tests.support.processes import WorkerProcess
from tests.support.tiny_models import row_image


def failover_jobs(count: int) -> list[Submission]:
    """``count`` classify jobs of ``tiny``: job i shows label i % 8."""
    return [Submission.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(count)]


@contextmanager
def worker_through_failover(redis_set: Any, repository: Path, log: Path) -> Iterator[WorkerProcess]:
    """A worker on ``redis_set`` (started: a SentinelSet or a RedisCluster) whose held
    jobs go back after 5 s; on leaving, the worker is stopped, then the set."""
    worker = WorkerProcess(redis_set.url, repository, log, env={"AIMASS_VISIBILITY_TIMEOUT_S": "5"})
    try:
        yield worker.start(90)
    finally:
        worker.stop()
        redis_set.stop()


def answers_through_failover(jobs: Sequence[Job], first_wait_s: float) -> tuple[int, list[str]]:
    """Wait for each job of a run of ``tiny`` classify jobs (job i shows label i % 8), in
    order, while a primary is failed over: how many were answered (each with its right
    label, or the test fails), and the ids of those never answered. Once one is lost, the
    rest get 10 s each, so that a broken failover ends the test in minutes."""
    answered = 0
    lost: list[str] = []
    for index, job in enumerate(jobs):
        try:
            result = job.result(timeout=first_wait_s if not lost else 10)
        except JobTimeout:
            lost.append(job.id)
            continue
        except AimassError as error:
            pytest.fail(f"job {index} failed: {error}")
        assert result["predictions"][0][0]["label"] == str(index % 8), index
        answered += 1
    return answered, lost
