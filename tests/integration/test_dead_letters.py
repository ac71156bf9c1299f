"""A job that kills its worker on every delivery is parked after AIMASS_MAX_DELIVERIES
instead of killing worker after worker; parked jobs can be listed, sent again, purged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from aimass.embedded_redis import free_port, stop_process
from aimass.producer.client import Client, JobStatus
from aimass.protocol.contract import Priority
from aimass.protocol.errors import WorkerLost
from aimass.protocol.keys import RUNS_HASH, dead_letter_key
from tests.support.poison import POISON_PIXEL
from tests.support.processes import aimass_command, child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return page.read().decode()


def dead(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*aimass_command(), "dead", *args],
        env=child_env(redis_url),
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.timeout(240)
def test_a_job_that_kills_its_worker_every_time_is_parked_and_the_rest_are_answered(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        # Two processes, each holding one job at a time: the poison kills only itself.
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.poison",
                "worker",
                "--repository",
                str(model_repository),
                "--devices",
                "cpu",
                "--procs-per-gpu",
                "2",
                "--concurrency",
                "1",
            ],
            env=child_env(redis_url, AIMASS_VISIBILITY_TIMEOUT_S="2", AIMASS_MAX_DELIVERIES="3"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with Client(redis_url) as client:
            poison = client.classify(
                np.full((8, 8), POISON_PIXEL, np.uint8), model="tiny", priority=Priority.high
            )
            good = [client.classify(row_image(i % 8), model="tiny") for i in range(40)]
            results = client.wait(good, timeout=150)
            with pytest.raises(WorkerLost, match="worker died 3 times"):
                poison.result(timeout=150)
    finally:
        stop_process(supervisor, 30)
    assert [r["predictions"][0][0]["label"] for r in results] == [str(i % 8) for i in range(40)]
    assert log.read_text().count("exited with signal SIGKILL") == 3
    listed = json.loads(dead(redis_url, "list", "--json").stdout)
    assert [(d["model"], d["job_id"]) for d in listed] == [("tiny", poison.id)]
    assert not redis.Redis.from_url(redis_url).hexists(RUNS_HASH, poison.id)
    assert dead(redis_url, "purge").stdout.strip() == "dropped 1 parked jobs"
    assert redis.Redis.from_url(redis_url).llen(dead_letter_key("tiny")) == 0


def test_a_parked_job_sent_again_runs_once_more(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    store = redis.Redis.from_url(redis_url)
    job_id = f"parked-{uuid.uuid4()}"
    with Client(redis_url) as client:
        job = client.classify(row_image(5), model="tiny", job_id=job_id)
        store.hset(RUNS_HASH, job_id, 3)  # as if three workers had died running it
        port = free_port()
        worker = start_worker(redis_url, model_repository, "--metrics-port", str(port))
        with pytest.raises(WorkerLost, match="worker died 3 times"):
            job.result(timeout=30)
        assert job.status() is JobStatus.failed
        gauge = 'aimass_dead_letters{model="tiny",version="1"} 1.0'
        deadline = time.monotonic() + 10
        while gauge not in metrics(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gauge in metrics(port)
        assert dead(redis_url, "list").stdout.split()[:2] == ["tiny", job_id]
        sent = dead(redis_url, "retry", job_id)
        assert sent.stdout.strip() == "sent 1 parked jobs again", sent.stderr
        again = client.job(job_id)
        assert again.result(timeout=30)["predictions"][0][0]["label"] == "5"
        worker.stop()
    assert store.llen(dead_letter_key("tiny")) == 0
    assert not store.hexists(RUNS_HASH, job_id)
