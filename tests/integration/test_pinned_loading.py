"""A job pinned to a version that is not loaded loads it on a thread of its own: the
consumer goes on taking every other model's jobs meanwhile."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from aimass.producer.client import Client
from aimass.protocol.manifest import ModelKind
from tests.support.tiny_models import OPSET, classifier_model, publish, row_image

pytestmark = pytest.mark.integration

BIG_FLOATS = 60_000_000  # 240 MB of weights, as AlexNet's


def big_classifier() -> bytes:
    """``tiny``'s graph plus a 240 MB initializer that the model reads one value of: as
    long to load as a large model, as quick to run as a small one."""
    tiny = onnx.load_from_string(classifier_model())
    graph = tiny.graph
    graph.initializer.append(
        numpy_helper.from_array(np.zeros(BIG_FLOATS, dtype=np.float32), "ballast")
    )
    graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "first"))
    graph.node.insert(0, helper.make_node("Gather", ["ballast", "first"], ["zero"]))
    logits = next(node for node in graph.node if node.op_type == "MatMul")
    logits.output[0] = "raw_logits"
    graph.node.insert(
        list(graph.node).index(logits) + 1,
        helper.make_node("Add", ["raw_logits", "zero"], ["logits"]),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.timeout(240)
def test_loading_a_pinned_version_does_not_hold_up_other_models(
    redis_url: str, tmp_path: Path, start_worker
) -> None:
    repository = tmp_path / "models"
    publish(repository, "tiny", 1, ModelKind.classify, classifier_model())
    big = big_classifier()
    for version in (1, 2):
        publish(repository, "big", version, ModelKind.classify, big)
    start_worker(repository=repository, redis_url=redis_url, ready_timeout=120)
    with Client(redis_url) as client:

        def tiny_latency() -> float:
            started = time.perf_counter()
            result = client.classify(row_image(4), model="tiny").result(timeout=30)
            assert result["predictions"][0][0]["label"] == "4"
            return time.perf_counter() - started

        calm = [tiny_latency() for _ in range(30)]
        pinned = client.classify(row_image(6), model="big", version=1)
        loading = []
        while not pinned.done():
            loading.append(tiny_latency())
        assert pinned.result(timeout=60)["version"] == 1
    loading.sort()
    p99 = loading[min(len(loading) - 1, int(len(loading) * 0.99))]
    print(
        f"tiny p50 {statistics.median(calm) * 1000:.1f} ms calm; while v1 of big loaded: "
        f"{len(loading)} jobs, p50 {statistics.median(loading) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms"
    )
    assert len(loading) >= 20, "the load was long enough to send jobs during it"
    assert p99 <= 0.050 + statistics.median(calm)
