"""Several worker processes on one device, under the supervisor that ``aimass worker``
becomes with ``--procs-per-gpu``: a child that is killed is started again, and no job is
lost meanwhile. CPU workers stand in for GPU ones: the supervisor treats both alike."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from aimass.embedded_redis import stop_process
from aimass.producer.client import Client
from aimass.protocol.heartbeats import Heartbeat, live_heartbeats
from aimass.worker.endpoints import probe
from tests.support.ports import free_ports_in_a_row
from tests.support.processes import aimass_command, child_env
from tests.support.sticky_cuda import TRIGGER_ENV
from tests.support.tiny_models import row_image
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def ready_children(redis_url: str, supervisor: int) -> dict[int, Heartbeat]:
    """Heartbeats of the supervisor's live children that say ready."""
    children = {
        p.pid for p in psutil.Process(supervisor).children() if p.status() != psutil.STATUS_ZOMBIE
    }
    client = redis.Redis.from_url(redis_url)
    try:
        beats = live_heartbeats(client)
    finally:
        client.close()
    return {b.pid: b for b in beats if b.pid in children and b.ready}


def wait_for(
    redis_url: str,
    supervisor: subprocess.Popen[bytes],
    count: int,
    log: Path,
    gone: int | None = None,
    timeout: float = 90,
) -> dict[int, Heartbeat]:
    """``count`` ready children, ``gone`` not among them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert supervisor.poll() is None, log.read_text()[-4000:]
        ready = ready_children(redis_url, supervisor.pid)
        if len(ready) == count and gone not in ready:
            return ready
        time.sleep(0.2)
    raise AssertionError(
        f"not {count} ready children after {timeout} s:\n{log.read_text()[-4000:]}"
    )


def test_a_killed_worker_process_is_restarted_and_no_job_is_lost(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        supervisor = subprocess.Popen(
            [
                *aimass_command(),
                "worker",
                "--repository",
                str(model_repository),
                "--devices",
                "cpu",
                "--procs-per-gpu",
                "2",
            ],
            env=child_env(redis_url, AIMASS_VISIBILITY_TIMEOUT_S="3"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        first = wait_for(redis_url, supervisor, 2, log)
        assert {b.device for b in first.values()} == {"cpu"}
        victim = min(first)
        with Client(redis_url) as client:
            jobs = [client.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(300)]
            psutil.Process(victim).send_signal(signal.SIGKILL)
            second = wait_for(redis_url, supervisor, 2, log, gone=victim)
            results = [job.result(timeout=60) for job in jobs]
    finally:
        code = stop_process(supervisor, 30)
    assert victim not in second and len(set(second) & set(first)) == 1
    assert [r["predictions"][0][0]["label"] for r in results] == [str(i % 8) for i in range(300)]
    text = log.read_text()
    assert "exited with signal SIGKILL" in text and "restarting it in 1 s" in text
    assert code == 0, text[-3000:]


def test_sticky_cuda_error_exits_the_process_which_is_restarted_and_no_job_is_lost(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    """A process whose sessions fail with a sticky CUDA error stops serving: unready at
    once, it exits (code 70) and its supervisor starts it afresh; the jobs of the batch
    that failed are run again by a process that works, and every job is answered."""
    log, trigger = tmp_path / "worker.log", tmp_path / "trigger"
    port = free_ports_in_a_row(3)  # the supervisor's and its two children's
    with log.open("ab") as out:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.sticky_cuda",
                "worker",
                "--repository",
                str(model_repository),
                "--devices",
                "cpu",
                "--procs-per-gpu",
                "2",
                "--metrics-port",
                str(port),
            ],
            env=child_env(
                redis_url, AIMASS_VISIBILITY_TIMEOUT_S="3", **{TRIGGER_ENV: str(trigger)}
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    answers: list[bool | str] = []
    stop = threading.Event()

    def watch_readiness() -> None:
        while not stop.is_set():
            answers.append(probe(f"http://127.0.0.1:{port}/readyz"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_readiness, daemon=True)
    try:
        first = wait_for(redis_url, supervisor, 2, log)
        watcher.start()
        trigger.touch()
        with Client(redis_url) as client:
            jobs = [client.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(200)]
            results = [job.result(timeout=90) for job in jobs]
        wait_until(
            lambda: (
                "restart 1)" in log.read_text()
                and len(ready_children(redis_url, supervisor.pid)) == 2
            ),
            timeout=90,
            what="the broken process started afresh",
        )
        wait_until(lambda: answers[-1] is True, timeout=30, what="the container ready again")
        after = ready_children(redis_url, supervisor.pid)
    finally:
        stop.set()
        code = stop_process(supervisor, 30)
    assert not trigger.exists(), "no process ran a batch after the trigger"
    assert [r["predictions"][0][0]["label"] for r in results] == [str(i % 8) for i in range(200)]
    text = log.read_text()
    assert "the device's context is broken" in text and "exited with code 70" in text, text[-4000:]
    unready = [a for a in answers if a is not True]
    assert unready, "the container never said it was unready"
    assert len(set(first) & set(after)) == 1  # one process was replaced, one kept
    assert code == 0, text[-3000:]
