"""Several worker processes on one device, under the supervisor that ``aimass worker``
becomes with ``--procs-per-gpu``: a child that is killed is started again, and no job is
lost meanwhile. CPU workers stand in for GPU ones: the supervisor treats both alike."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import redis

from aimass.embedded_redis import stop_process
from aimass.producer.client import Client
from aimass.protocol.heartbeats import live_heartbeats
from tests.support.processes import aimass_command, child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


def ready_children(redis_url: str, supervisor: int) -> dict[int, dict]:
    """Heartbeats of the supervisor's live children that say ready."""
    children = {p.pid for p in psutil.Process(supervisor).children()
                if p.status() != psutil.STATUS_ZOMBIE}
    client = redis.Redis.from_url(redis_url)
    try:
        beats = live_heartbeats(client)
    finally:
        client.close()
    return {b["pid"]: b for b in beats if b["pid"] in children and b.get("ready")}


def wait_for(redis_url: str, supervisor: subprocess.Popen[bytes], count: int,
             log: Path, gone: int | None = None, timeout: float = 90) -> dict[int, dict]:
    """``count`` ready children, ``gone`` not among them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert supervisor.poll() is None, log.read_text()[-4000:]
        ready = ready_children(redis_url, supervisor.pid)
        if len(ready) == count and gone not in ready:
            return ready
        time.sleep(0.2)
    raise AssertionError(f"not {count} ready children after {timeout} s:\n"
                         f"{log.read_text()[-4000:]}")


def test_a_killed_worker_process_is_restarted_and_no_job_is_lost(
        redis_url: str, model_repository: Path, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        supervisor = subprocess.Popen(
            [*aimass_command(), "worker", "--repository", str(model_repository),
             "--devices", "cpu", "--procs-per-gpu", "2"],
            env=child_env(redis_url, AIMASS_VISIBILITY_TIMEOUT_S="3"), stdout=out,
            stderr=subprocess.STDOUT)
    try:
        first = wait_for(redis_url, supervisor, 2, log)
        assert {b["device"] for b in first.values()} == {"cpu"}
        victim = min(first)
        with Client(redis_url) as client:
            jobs = [client.classify(row_image(i % 8), model="tiny", top_k=1)
                    for i in range(300)]
            psutil.Process(victim).send_signal(signal.SIGKILL)
            second = wait_for(redis_url, supervisor, 2, log, gone=victim)
            results = [job.result(timeout=60) for job in jobs]
    finally:
        code = stop_process(supervisor, 30)
    assert victim not in second and len(set(second) & set(first)) == 1
    assert [r["predictions"][0][0]["label"] for r in results] == \
        [str(i % 8) for i in range(300)]
    text = log.read_text()
    assert "exited with signal SIGKILL" in text and "restarting it in 1 s" in text
    assert code == 0, text[-3000:]
