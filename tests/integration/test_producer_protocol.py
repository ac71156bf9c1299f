"""The wire protocol as other languages see it: raw messages pushed with plain redis-py,
results read with GET, the client's envelope against Celery's own, and every example
of docs/enqueue.md run against a real worker."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
import pytest
import redis
from celery import Celery

from aimass.producer.client import Client, producer_config
from aimass.producer.submission import Submission
from aimass.protocol.codecs import encode_image
from aimass.protocol.contract import ClassifyJob
from aimass.protocol.messages import TaskMessage
from tests.support.processes import child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def raw_message(job_id: str, kwargs: dict[str, Any], queue: str) -> bytes:
    """The minimal message: headers lang, task, id; JSON body, base64."""
    body = json.dumps([[], kwargs, EMBED]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {"lang": "js", "task": "aimass.classify", "id": job_id},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
            },
        }
    ).encode()


def read_result(r: redis.Redis, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = r.get(f"celery-task-meta-{job_id}")
        if raw is not None:
            meta = json.loads(raw)
            if meta["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                return meta
        time.sleep(0.05)
    raise AssertionError(f"no result for {job_id} within {timeout} s")


def test_a_raw_message_pushed_with_plain_redis_gets_a_json_result(shared_url: str) -> None:
    r = redis.Redis.from_url(shared_url)
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    png = base64.b64encode(encode_image(row_image(6))).decode()
    r.lpush(
        "aimass.tiny",
        raw_message(good, {"model": "tiny", "inputs": [{"image": png}]}, "aimass.tiny"),
    )
    gif = base64.b64encode(b"GIF89a\x01\x00").decode()
    r.lpush(
        "aimass.tiny",
        raw_message(bad, {"model": "tiny", "inputs": [{"image": gif}]}, "aimass.tiny"),
    )
    success, failure = read_result(r, good), read_result(r, bad)
    assert success["status"] == "SUCCESS" and success["task_id"] == good
    assert success["result"]["predictions"][0][0]["label"] == "6"
    jsonschema.validate(success["result"], load_schema("classify-result.json"))
    assert failure["status"] == "FAILURE"
    assert failure["result"]["exc_type"] == "InvalidInput"
    assert failure["result"]["exc_module"] == "aimass.producer.errors"
    assert "not PNG, JPEG or NPY" in failure["result"]["exc_message"][0]
    jsonschema.validate(failure["result"], load_schema("error-result.json"))


def test_a_raw_msgpack_message_with_raw_bytes_works(shared_url: str) -> None:
    r = redis.Redis.from_url(shared_url)
    job_id = str(uuid.uuid4())
    kwargs = {"model": "tiny", "top_k": 1, "inputs": [{"image": encode_image(row_image(3))}]}
    message = json.loads(raw_message(job_id, {}, "aimass.tiny"))
    message.update(
        {
            "content-type": "application/x-msgpack",
            "content-encoding": "binary",
            "body": base64.b64encode(msgpack.packb([[], kwargs, EMBED])).decode(),
        }
    )
    message["properties"]["priority"] = 3
    r.lpush("aimass.tiny\x06\x163", json.dumps(message))
    meta = read_result(r, job_id)
    assert meta["status"] == "SUCCESS", meta
    assert meta["result"]["predictions"] == [
        [{"label": "3", "index": 3, "score": pytest.approx(1.0)}]
    ]


def test_the_client_writes_the_envelope_celery_writes(redis_url: str) -> None:
    app = Celery("sender", set_as_current=False)
    app.conf.update(producer_config(redis_url))
    cases = [
        (0, "aimass.tiny", "msgpack"),
        (6, "aimass.tiny\x06\x166", "msgpack"),
        (3, "aimass.tiny\x06\x163", "json"),
    ]
    with Client(redis_url) as client:
        for priority, name, serializer in cases:
            ours = Submission.classify(
                [row_image(1), row_image(2)],
                model="tiny",
                priority=priority,
                deadline=60,
                serializer=serializer,
            )
            client.submit(ours)
            kwargs = ours.raw_kwargs if serializer == "msgpack" else ours.kwargs
            app.send_task(
                "aimass.classify",
                kwargs=kwargs,
                task_id=f"celery-{priority}",
                queue="aimass.tiny",
                priority=priority,
                expires=ours.expires,
                serializer=serializer,
            )
            theirs, mine = (json.loads(m) for m in client.redis.lrange(name, 0, 1))
            # The same headers as Celery's, and the W3C trace context of the job.
            assert set(mine["headers"]) == set(theirs["headers"]) | {"traceparent"}
            assert set(mine["properties"]) <= set(theirs["properties"])
            for field in ("content-type", "content-encoding"):
                assert mine[field] == theirs[field]
            for field in ("delivery_info", "priority", "body_encoding", "delivery_mode"):
                assert mine["properties"][field] == theirs["properties"][field]
            for field in ("lang", "task", "expires", "eta", "retries", "timelimit"):
                assert mine["headers"][field] == theirs["headers"][field], field
            assert (
                TaskMessage.from_envelope(mine).payload()
                == TaskMessage.from_envelope(theirs).payload()
            )
    app.close()


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((DOCS / "schemas" / name).read_text())


def doc_blocks(language: str) -> list[str]:
    text = (DOCS / "enqueue.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture
def example_env(shared_url: str, tmp_path: Path) -> dict[str, str]:
    image = tmp_path / "row5.png"
    image.write_bytes(encode_image(row_image(5)))
    return child_env(shared_url, MODEL="tiny", IMAGE=str(image))


def test_the_python_examples_of_the_guide_run(example_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-"],
        input="\n".join(doc_blocks("python")),
        env=example_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "label 5 score 1.000",
        "client: 5",
        "bulk: 50 50",
        "async: 5",
    ]


def test_the_shell_example_of_the_guide_runs(example_env: dict[str, str]) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    (block,) = doc_blocks("sh")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=example_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout.strip().splitlines()[-1])
    assert meta["status"] == "SUCCESS", meta
    assert meta["result"]["predictions"][0][0]["label"] == "5"


def test_the_json_examples_of_the_guide_match_the_contract() -> None:
    message, success, failure = (json.loads(block) for block in doc_blocks("json"))
    args, kwargs, embed = TaskMessage.from_envelope(message).payload()
    assert (args, embed) == ([], EMBED)
    job = ClassifyJob.model_validate(kwargs)
    assert job.inputs[0].image is not None and job.inputs[0].image.startswith(b"\x89PNG")
    assert message["properties"]["delivery_info"]["routing_key"] == f"aimass.{job.model}"
    assert set(message["headers"]) >= {"lang", "task", "id"}
    jsonschema.validate(success["result"], load_schema("classify-result.json"))
    jsonschema.validate(failure["result"], load_schema("error-result.json"))
    for meta in (success, failure):
        assert set(meta) == {"status", "result", "traceback", "children", "date_done", "task_id"}
