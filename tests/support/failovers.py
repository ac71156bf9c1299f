"""What a failover test asks of every job: answered once, with the right label."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aimass.producer.client import Job
from aimass.protocol.errors import AimassError, JobTimeout


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
