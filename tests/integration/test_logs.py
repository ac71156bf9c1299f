"""AIMASS_LOG_FORMAT=json on a real worker: every line of its log is one JSON object, and
each settled job has a line with its id, model, version, batch, outcome and the trace
context its producer sent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis

from aimass.producer.client import Client
from aimass.protocol.keys import priority_queue_names
from aimass.protocol.messages import TaskMessage
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


def test_json_logs_give_each_job_a_line_with_its_trace(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        jobs = [client.classify(row_image(i), model="tiny") for i in range(3)]
        bad = client.classify(b"not an image", model="tiny")
        tensor = np.zeros((1, 8, 8, 1), np.float32)
        tensor[0, 5] = 1.0
        infer = client.infer("tiny", {"image": tensor})
        queued = [
            raw
            for name in priority_queue_names("tiny")
            for raw in redis.Redis.from_url(redis_url).lrange(name, 0, -1)
        ]
        sent = {m.task_id: m.traceparent for m in map(TaskMessage.decode, queued)}
        worker = start_worker(redis_url, model_repository, AIMASS_LOG_FORMAT="json")
        for job in [*jobs, infer]:
            job.result(timeout=30)
        with pytest.raises(Exception, match="not PNG"):
            bad.result(timeout=30)
        worker.stop()
    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    by_job = {e["job_id"]: e for e in entries if e.get("logger") == "aimass.jobs"}
    for job in jobs:
        entry = by_job[job.id]
        assert (entry["model"], entry["version"], entry["outcome"]) == ("tiny", 1, "succeeded")
        assert entry["batch_size"] >= 1 and entry["traceparent"] == sent[job.id]
        assert entry["task"] == "aimass.classify" and entry["kind"] == "classify"
    tensor_entry = by_job[infer.id]  # a tensor job names its task and kind too
    assert (tensor_entry["task"], tensor_entry["kind"]) == ("aimass.infer", "tensor")
    assert tensor_entry["outcome"] == "succeeded"
    failed = by_job[bad.id]
    assert (failed["outcome"], failed["reason"]) == ("failed", "InvalidInput")
    assert failed["traceparent"] == sent[bad.id]
