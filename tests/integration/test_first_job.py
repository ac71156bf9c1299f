"""The first classify job end to end: real Redis, real worker processes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from aimass.producer.client import Client, JobStatus
from aimass.protocol.codecs import encode_image
from aimass.protocol.contract import ClassifyResult, GenerateResult
from aimass.protocol.errors import InvalidInput, UnknownModel
from tests.support.processes import WorkerProcess, aimass_command, child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


def run_python(code: str, redis_url: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(redis_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_enqueue_in_one_process_answer_in_a_worker_read_in_a_third(
    shared_url: str, tmp_path: Path
) -> None:
    image = tmp_path / "row5.png"
    image.write_bytes(encode_image(row_image(5)))
    job_id = run_python(
        f"""
        from aimass.producer.client import Client
        job = Client.from_env().classify({str(image)!r}, model="tiny", top_k=3)
        print(job.id)
    """,
        shared_url,
    )
    reader = subprocess.run(
        [*aimass_command(), "result", job_id, "--wait", "30", "--json"],
        env=child_env(shared_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reader.returncode == 0, reader.stderr
    result = ClassifyResult.model_validate_json(reader.stdout)
    assert result.model == "tiny" and result.version == 1
    assert result.predictions[0][0].label == "5"
    assert len(result.predictions[0]) == 3
    assert result.timing.batch_size >= 1


def test_plain_celery_sender_without_aimass_gets_the_contract_result(shared_url: str) -> None:
    png = base64.b64encode(encode_image(row_image(2))).decode()
    out = run_python(
        f"""
        import json, sys
        from celery import Celery
        app = Celery(broker={shared_url!r}, backend={shared_url!r})
        app.conf.task_serializer = "json"
        result = app.send_task("aimass.classify", queue="aimass.tiny",
                               kwargs={{"model": "tiny", "inputs": [{{"image": {png!r}}}]}})
        print(json.dumps(result.get(timeout=30)))
        assert not any(name.split(".")[0] in ("producer", "worker", "export")
                       for name in sys.modules)
    """,
        shared_url,
    )
    result = ClassifyResult.model_validate_json(out)
    assert result.predictions[0][0].label == "2"
    assert len(result.predictions[0]) == 5


def test_generate_with_a_seed_is_reproducible_and_classifies_as_asked(shared_url: str) -> None:
    with Client(shared_url) as client:
        first = client.generate(model="tiny-gan", count=3, labels=[1, 4, 6], seed=11)
        again = client.generate(model="tiny-gan", count=3, labels=[1, 4, 6], seed=11)
        a, b = first.result(timeout=30), again.result(timeout=30)
        assert a["seed"] == 11 and a["labels"] == [1, 4, 6]
        assert [img.tobytes() for img in a["images"]] == [img.tobytes() for img in b["images"]]
        check = client.classify(a["images"], model="tiny", top_k=1).result(timeout=30)
        assert [p[0]["label"] for p in check["predictions"]] == ["1", "4", "6"]
    raw = redis.Redis.from_url(shared_url).get(f"celery-task-meta-{first.id}")
    assert raw is not None
    GenerateResult.model_validate(json.loads(raw)["result"])


def test_typed_errors_reach_the_producer(shared_url: str) -> None:
    with Client(shared_url) as client:
        bad = client.classify(b"\x89PNG\r\n\x1a\ntruncated", model="tiny")
        with pytest.raises(InvalidInput, match="could not be decoded"):
            bad.result(timeout=30)
        assert bad.status() is JobStatus.failed
        pinned = client.classify(row_image(1), model="tiny", version=9)
        with pytest.raises(UnknownModel, match="has no version 9"):
            pinned.result(timeout=30)


def test_unknown_id_reads_unknown_and_submitted_reads_queued(redis_url: str) -> None:
    with Client(redis_url) as client:  # no worker on this database
        assert client.job("never-submitted").status() is JobStatus.unknown
        job = client.classify(row_image(1), model="tiny")
        assert client.job(job.id).status() is JobStatus.queued


def test_pickle_message_is_refused_and_the_worker_goes_on(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    worker: WorkerProcess = start_worker(redis_url, model_repository)
    out = run_python(
        f"""
        from celery import Celery
        app = Celery(broker={redis_url!r})
        app.conf.task_serializer = "pickle"
        app.conf.accept_content = ["pickle"]
        r = app.send_task("aimass.classify", queue="aimass.tiny", serializer="pickle",
                          kwargs={{"model": "tiny", "inputs": []}})
        print(r.id)
    """,
        redis_url,
    )
    assert out
    with Client(redis_url) as client:
        good = client.classify(row_image(4), model="tiny")
        assert good.result(timeout=30)["predictions"][0][0]["label"] == "4"
    deadline = time.monotonic() + 10
    while "pickle" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "pickle" in worker.log()
    assert worker.alive()
    # The refused message is not left in the queue to be redelivered.
    assert redis.Redis.from_url(redis_url).llen("aimass.tiny") == 0


def test_cli_help_lists_the_commands() -> None:
    done = subprocess.run([*aimass_command(), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("worker", "check", "classify", "status", "result"):
        assert command in done.stdout
