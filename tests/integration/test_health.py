"""The probes and gauges a worker serves on its metrics port, against real processes:
/livez and /readyz through a Redis outage, a container's readiness while one of its
worker processes restarts, and the queue-depth gauges under a backlog."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from aimass.embedded_redis import RedisServer, free_port, stop_process
from aimass.producer.client import Client, JobStatus
from aimass.producer.submission import Submission
from aimass.protocol.contract import Priority
from aimass.protocol.keys import priority_queue_names
from aimass.protocol.manifest import ModelKind
from tests.support.hanging_model import hanging_classifier
from tests.support.ports import free_ports_in_a_row
from tests.support.processes import aimass_command, child_env
from tests.support.tiny_models import publish, row_image
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def test_with_redis_down_livez_stays_200_and_readyz_turns_503_until_it_is_back(
    model_repository: Path, tmp_path: Path, start_worker
) -> None:
    folder = tmp_path / "redis"
    server = RedisServer(folder, persistent=True).start()
    port = free_port()
    try:
        worker = start_worker(server.url, model_repository, "--metrics-port", str(port))
        assert get(port, "/livez")[0] == 200
        assert get(port, "/readyz")[0] == 200
        server.kill()
        wait_until(lambda: get(port, "/readyz")[0] == 503, 15, "/readyz to fail")
        body = get(port, "/readyz")[1]
        assert json.loads(body)["checks"]["redis"].startswith("Redis unreachable")
        for _ in range(5):  # and it stays alive through the outage
            assert get(port, "/livez")[0] == 200
            time.sleep(0.5)
        check = subprocess.run(
            [*aimass_command(), "check"],
            capture_output=True,
            text=True,
            env=child_env(server.url, AIMASS_METRICS_PORT=str(port)),
            timeout=30,
        )
        assert check.returncode == 1 and "Redis unreachable" in check.stderr
        server = RedisServer(folder, server.port, persistent=True).start()
        wait_until(lambda: get(port, "/readyz")[0] == 200, 20, "/readyz to recover")
        assert get(port, "/livez")[0] == 200 and worker.alive()
        with Client(server.url) as client:
            assert (
                client.classify(row_image(2), model="tiny").result(timeout=30)["predictions"][0][0][
                    "label"
                ]
                == "2"
            )
    finally:
        server.stop()


def test_a_container_is_unready_while_one_of_its_worker_processes_restarts(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    port = free_ports_in_a_row(3)  # the supervisor's and its two children's
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
                "--metrics-port",
                str(port),
            ],
            env=child_env(redis_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: get(port, "/readyz")[0] == 200, 90, "the container to be ready")
        children = psutil.Process(supervisor.pid).children()
        assert len(children) == 2
        # Each child answers on a port of its own, after the container's.
        assert {get(port + i, "/readyz")[0] for i in (1, 2)} == {200}
        children[0].send_signal(signal.SIGKILL)
        wait_until(lambda: get(port, "/readyz")[0] == 503, 10, "the container to be unready")
        body = json.loads(get(port, "/readyz")[1])
        assert sum(why is not True for why in body["checks"].values()) == 1
        assert get(port, "/livez")[0] == 200
        wait_until(lambda: get(port, "/readyz")[0] == 200, 90, "the restarted process")
        metrics = get(port, "/metrics")[1]
        assert re.search(r'aimass_worker_restarts_total\{process="cpu\.[01]"\} 1\.0', metrics)
        check = subprocess.run(
            [*aimass_command(), "check"],
            capture_output=True,
            text=True,
            env=child_env(redis_url, AIMASS_METRICS_PORT=str(port)),
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
    finally:
        code = stop_process(supervisor, 30)
    assert code == 0, log.read_text()[-3000:]


def gauges(port: int, name: str) -> dict[str, float]:
    """A gauge's samples by their label text."""
    text = get(port, "/metrics")[1]
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", text, flags=re.MULTILINE)
    }


def test_queue_depth_gauges_match_the_lists_under_a_backlog(
    redis_url: str, tmp_path: Path, start_worker
) -> None:
    repository = tmp_path / "models"
    publish(repository, "tiny-hang", 1, ModelKind.classify, hanging_classifier())
    port = free_port()
    # One job at a time, and the first one hangs: everything sent after it stays queued.
    start_worker(
        redis_url,
        repository,
        "--metrics-port",
        str(port),
        "--concurrency",
        "1",
        "--max-batch-size",
        "1",
        AIMASS_JOB_TIME_LIMIT_S="60",
        AIMASS_TRACK_STARTED="1",
    )
    store = redis.Redis.from_url(redis_url)
    with Client(redis_url, max_queue_depth=0) as client:
        hanging = client.classify(row_image(3), model="tiny-hang")
        wait_until(lambda: hanging.status() is JobStatus.started, 20, "the hanging job")
        black = row_image(0) * 0
        client.submit_many(Submission.classify(black, model="tiny-hang") for _ in range(700))
        client.submit_many(
            Submission.classify(black, model="tiny-hang", priority=Priority.low) for _ in range(300)
        )
        lists = priority_queue_names("tiny-hang")
        lengths = {name: store.llen(name) for name in lists}
        assert sum(lengths.values()) == 1000 and sorted(lengths.values()) == [0, 0, 300, 700]

        def matches() -> bool:
            depth = gauges(port, "aimass_queue_depth")
            return len(depth) == 4 and sum(depth.values()) == 1000

        wait_until(matches, 15, "the gauges to see the backlog")
    depth = gauges(port, "aimass_queue_depth")
    steps = {name: int(name.split("\x06\x16")[1]) if "\x06" in name else 0 for name in lists}
    for name, length in lengths.items():
        assert depth[f'model="tiny-hang",priority="{steps[name]}",version="1"'] == length
    oldest = gauges(port, "aimass_oldest_job_age_seconds")['model="tiny-hang",version="1"']
    assert 0 < oldest < 60
    # The guide's recipe, run against the real lists, reads the same depth.
    recipe = re.search(
        r"```python\n(names = .*?)```", (DOCS / "enqueue.md").read_text(), flags=re.DOTALL
    )
    assert recipe is not None, "the backpressure recipe in docs/enqueue.md"
    scope: dict = {"r": store, "model": "tiny-hang"}
    exec(recipe.group(1), scope)
    assert scope["depth"] == 1000
