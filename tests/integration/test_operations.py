"""Hot reload, metrics, and the Celery conventions (celery -A, inspect)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aimass.embedded_redis import free_port
from aimass.producer.client import Client
from aimass.protocol.manifest import ModelKind
from tests.support.processes import child_env
from tests.support.tiny_models import classifier_model, publish, row_image

pytestmark = pytest.mark.integration


def celery_command() -> str:
    return str(Path(sys.executable).parent / "celery")


def test_hot_reload_switches_versions_with_no_failed_job(
    redis_url: str, model_repository: Path, tmp_path: Path, start_worker
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(model_repository, repository)
    start_worker(redis_url, repository, AIMASS_RELOAD_INTERVAL_S="0.5")
    with Client(redis_url) as client:
        jobs = []
        deadline = time.monotonic() + 60
        published = False
        seen_v2 = False
        while not seen_v2 and time.monotonic() < deadline:
            jobs.append(client.classify(row_image(3), model="tiny", top_k=1))
            if len(jobs) == 20 and not published:
                # Written aside, then renamed into place, as the exporter publishes.
                staged = publish(
                    tmp_path / "staging", "tiny", 2, ModelKind.classify, classifier_model(gain=2.0)
                )
                staged.rename(repository / "tiny" / "2")
                published = True
            if len(jobs) % 10 == 0:
                seen_v2 = jobs[-1].result(timeout=30)["version"] == 2
            time.sleep(0.02)
        results = [job.result(timeout=30) for job in jobs]
        assert seen_v2, "the worker never switched to version 2"
        versions = [r["version"] for r in results]
        # Old version until the switch, new one after: never back, never a failure.
        assert versions == sorted(versions) and versions[0] == 1
        assert all(r["predictions"][0][0]["label"] == "3" for r in results)
        # A job pinned to the old version still gets it.
        assert (
            client.classify(row_image(5), model="tiny", version=1).result(timeout=30)["version"]
            == 1
        )


def test_metrics_endpoint_counts_jobs_and_batches(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    port = free_port()
    start_worker(redis_url, model_repository, "--metrics-port", str(port))
    with Client(redis_url) as client:
        for job in [client.classify(row_image(i % 8), model="tiny") for i in range(10)]:
            job.result(timeout=30)
        bad = client.classify(b"nope", model="tiny")
        with pytest.raises(Exception, match="not PNG"):
            bad.result(timeout=30)
    text = ""
    deadline = time.monotonic() + 10
    # Gauges read from outside the process (readiness, backlog) refresh every 2 s.
    while (
        not ('outcome="failed"' in text and "aimass_ready 1.0" in text)
        and time.monotonic() < deadline
    ):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
        time.sleep(0.1)
    assert (
        'aimass_jobs_total{kind="classify",model="tiny",outcome="succeeded",reason="",'
        'version="1"} 10.0' in text
    )
    assert 'outcome="failed",reason="InvalidInput",version="-"' in text  # before its batch
    # Exact sizes on the CPU: each batch is counted under its own size as its "bucket".
    runs = re.findall(
        r'aimass_batch_size_count\{bucket="(\d+)",model="tiny",version="1"\} (\S+)', text
    )
    sums = re.findall(
        r'aimass_batch_size_sum\{bucket="(\d+)",model="tiny",version="1"\} (\S+)', text
    )
    assert runs and all(
        float(total) == int(size) * float(count)
        for (size, count), (_, total) in zip(sorted(runs), sorted(sums), strict=True)
    )
    assert (
        'aimass_model_info{kind="classify",model="tiny",provider="CPUExecutionProvider",'
        'version="1"} 1.0' in text
    )
    assert "aimass_inference_seconds_bucket" in text and "aimass_job_seconds_bucket" in text
    assert 'aimass_queue_depth{model="tiny",priority="0",version="1"} 0.0' in text
    assert "aimass_cpu_fallback 0.0" in text and "aimass_ready 1.0" in text
    assert "aimass_gpu_utilization_ratio{" not in text  # no GPU here: no series


def test_celery_inspect_sees_the_worker_and_its_models(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    worker = start_worker(redis_url, model_repository)
    done = subprocess.run(
        [
            celery_command(),
            "-A",
            "aimass.worker.main",
            "inspect",
            "aimass",
            "--timeout",
            "5",
            "--json",
        ],
        env=child_env(redis_url, AIMASS_MODEL_REPOSITORY=str(model_repository)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert str(worker.pid) in done.stdout
    assert "aimass.tiny" in done.stdout and "aimass.tiny-gan" in done.stdout


def test_the_app_also_runs_under_celerys_own_command(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    with (tmp_path / "celery.log").open("wb") as log:
        process = subprocess.Popen(
            [
                celery_command(),
                "-A",
                "aimass.worker.main",
                "worker",
                "--pool=threads",
                "--concurrency=8",
                "--without-mingle",
                "--without-gossip",
            ],
            env=child_env(redis_url, AIMASS_MODEL_REPOSITORY=str(model_repository)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with Client(redis_url) as client:
            result = client.classify(row_image(6), model="tiny").result(timeout=60)
        assert result["predictions"][0][0]["label"] == "6"
    finally:
        process.terminate()
        process.wait(30)


def test_flower_sees_the_model_queues_and_the_jobs_task_events(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    from celery import Celery

    start_worker(redis_url, model_repository)
    app = Celery(broker=redis_url)
    queues = [
        q["name"]
        for queues in app.control.inspect(timeout=5).active_queues().values()
        for q in queues
    ]
    assert {"aimass.tiny", "aimass.tiny-gan"} <= set(queues)
    assert app.control.enable_events(reply=True, timeout=5)  # what Flower does on start
    seen: dict[str, set[str]] = {}
    with app.connection_for_read() as connection, Client(redis_url) as client:
        receiver = app.events.Receiver(
            connection,
            handlers={
                "*": lambda event: seen.setdefault(event.get("uuid", ""), set()).add(event["type"])
            },
        )
        events = receiver.itercapture(limit=None, timeout=5, wakeup=True)
        next(events)  # listening (the wake-up makes workers send a heartbeat event)
        job = client.classify(row_image(2), model="tiny")
        bad = client.classify(b"not an image", model="tiny")
        deadline = time.monotonic() + 20
        for _ in events:
            if {"task-received", "task-succeeded"} <= seen.get(
                job.id, set()
            ) and "task-failed" in seen.get(bad.id, set()):
                break
            assert time.monotonic() < deadline, seen
