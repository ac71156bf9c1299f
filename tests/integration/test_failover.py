"""A Redis failover under load: a primary, a replica and three sentinels; the primary is
SIGKILLed while thousands of jobs are in flight, a sentinel promotes the replica, and
workers and producers follow it by themselves. Every job gets one answer; a job lost
with the writes that had not reached the replica is named and counted."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from aimass.producer.client import Client
from tests.support.failovers import answers_through_failover, failover_jobs, worker_through_failover
from tests.support.sentinels import SentinelSet

pytestmark = pytest.mark.integration

JOBS = 3000


@pytest.mark.timeout(300)
def test_a_failover_under_load_answers_every_job_once(
    model_repository: Path, tmp_path: Path
) -> None:
    cluster = SentinelSet(tmp_path / "redis").start()
    with worker_through_failover(cluster, model_repository, tmp_path / "worker.log") as worker:
        first_primary = cluster.primary_port()
        with Client(cluster.url, max_queue_depth=0) as client:
            jobs = client.submit_many(failover_jobs(JOBS))
            # While this thread waits for the results, another kills the primary once a
            # quarter of the jobs is answered: the worker and this client's waits must
            # both follow the failover.
            killer = threading.Thread(
                target=_kill_when_answered, daemon=True, args=(cluster, jobs[JOBS // 4].id)
            )
            killer.start()
            answered, lost = answers_through_failover(jobs, first_wait_s=90)
            killer.join(60)
        assert cluster.primary_port() != first_primary, "the primary was failed over"
        print(
            f"{JOBS} jobs, primary killed after {JOBS // 4}: {answered} answered, "
            f"{len(lost)} lost: {lost[:10]}"
        )
        assert not lost, f"{len(lost)} jobs lost in the failover: {lost[:10]}"
        assert worker.alive()
        assert redis.Redis(port=cluster.primary_port()).hlen("unacked") == 0


def _kill_when_answered(cluster: SentinelSet, job_id: str) -> None:
    with Client(cluster.url) as client:
        job = client.job(job_id)
        cluster.wait(job.done, 60, "a quarter of the jobs")
    cluster.primary.kill()
