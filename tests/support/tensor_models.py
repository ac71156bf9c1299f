"""Tiny tensor models built with onnx.helper (no TensorFlow), published like real ones,
whose answers a test computes with numpy.

``tiny-tensor``: ``features`` float32 (N, 3) and ``category`` int64 (N,) -> ``score``
float32 (N, 1) = features . (1, 2, 3) + category, and ``scaled`` float32 (N, 3) =
2 x features.
``tiny-seq``: ``tokens`` int64 (N, S), S left open -> ``total`` int64 (N, 1), each
row's sum.
``tiny-unbatched``: ``x`` float32 (3,), no batch dimension -> ``y`` = 2 x.

Classifiers of tensors that are not images (no preprocessing), for ``aimass.classify``:
``tiny-features``: ``features`` float32 (N, 3) -> ``probabilities`` = softmax(features),
labels low, mid, high: the largest feature wins.
``tiny-tokens``: ``tokens`` int64 (N, S), S left open -> ``probabilities`` =
softmax(-s, s) with s each row's sum, labels negative, positive.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from aimass.protocol.manifest import MODEL_FILE, BatchingSpec, Manifest, ModelKind, TensorSpec
from tests.support.tiny_models import serialize

WEIGHTS = np.array([1.0, 2.0, 3.0], dtype=np.float32)


def expected_tensor(features: np.ndarray, category: np.ndarray) -> dict[str, np.ndarray]:
    """What ``tiny-tensor`` answers."""
    score = (features @ WEIGHTS + category.astype(np.float32))[:, None]
    return {"score": score.astype(np.float32), "scaled": features * 2}


def tensor_model() -> bytes:
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["features", "weights"], ["weighted"]),
            helper.make_node("ReduceSum", ["weighted", "axis1"], ["summed"], keepdims=1),
            helper.make_node("Cast", ["category"], ["category_float"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["category_float", "axis1"], ["category_column"]),
            helper.make_node("Add", ["summed", "category_column"], ["score"]),
            helper.make_node("Mul", ["features", "two"], ["scaled"]),
        ],
        "tiny-tensor",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("category", TensorProto.INT64, ["N"]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["N", 3]),
        ],
        initializer=[
            numpy_helper.from_array(WEIGHTS, "weights"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        ],
    )
    return serialize(graph)


def sequence_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["tokens", "axis1"], ["total"], keepdims=1)],
        "tiny-seq",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "S"])],
        [helper.make_tensor_value_info("total", TensorProto.INT64, ["N", 1])],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")],
    )
    return serialize(graph)


def unbatched_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "tiny-unbatched",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    return serialize(graph)


def features_classifier() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["features"], ["probabilities"], axis=1)],
        "tiny-features",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
    )
    return serialize(graph)


def tokens_classifier() -> bytes:
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["values"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["values", "axis1"], ["total"], keepdims=1),
            helper.make_node("Mul", ["total", "signs"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny-tokens",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "S"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array([-1.0, 1.0], dtype=np.float32), "signs"),
        ],
    )
    return serialize(graph)


def publish(
    repository: Path,
    name: str,
    model: bytes,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    batched: bool = True,
    kind: ModelKind = ModelKind.tensor,
    labels: list[str] | None = None,
    version: int = 1,
    batching: BatchingSpec | None = None,
    **fields: Any,
) -> Path:
    """Write ``model`` and its manifest as ``name`` v``version`` (``fields``: the rest of
    the manifest, a sequence model's ``sequence`` say)."""
    folder = repository / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model)
    Manifest(
        name=name,
        version=version,
        kind=kind,
        labels=labels or [],
        inputs=inputs,
        outputs=outputs,
        batched=batched,
        sha256=hashlib.sha256(model).hexdigest(),
        batching=batching or BatchingSpec(max_batch_size=16, max_queue_delay_ms=5.0),
        trained=False,
        **fields,
    ).write(folder)
    return folder


def add_tensor_models(repository: Path) -> Path:
    """``tiny-tensor``, ``tiny-seq`` and ``tiny-unbatched`` v1 in ``repository``."""
    publish(
        repository,
        "tiny-tensor",
        tensor_model(),
        [
            TensorSpec(name="features", dtype="float32", shape=[-1, 3]),
            TensorSpec(name="category", dtype="int64", shape=[-1]),
        ],
        [
            TensorSpec(name="score", dtype="float32", shape=[-1, 1]),
            TensorSpec(name="scaled", dtype="float32", shape=[-1, 3]),
        ],
    )
    publish(
        repository,
        "tiny-seq",
        sequence_model(),
        [TensorSpec(name="tokens", dtype="int64", shape=[-1, -1])],
        [TensorSpec(name="total", dtype="int64", shape=[-1, 1])],
    )
    publish(
        repository,
        "tiny-unbatched",
        unbatched_model(),
        [TensorSpec(name="x", dtype="float32", shape=[3])],
        [TensorSpec(name="y", dtype="float32", shape=[3])],
        batched=False,
    )
    add_feature_classifiers(repository)
    return repository


def add_feature_classifiers(repository: Path) -> Path:
    """``tiny-features`` and ``tiny-tokens`` v1: classify models whose input is no image."""
    publish(
        repository,
        "tiny-features",
        features_classifier(),
        [TensorSpec(name="features", dtype="float32", shape=[-1, 3])],
        [TensorSpec(name="probabilities", dtype="float32", shape=[-1, 3])],
        kind=ModelKind.classify,
        labels=["low", "mid", "high"],
    )
    publish(
        repository,
        "tiny-tokens",
        tokens_classifier(),
        [TensorSpec(name="tokens", dtype="int64", shape=[-1, -1])],
        [TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2])],
        kind=ModelKind.classify,
        labels=["negative", "positive"],
    )
    return repository
