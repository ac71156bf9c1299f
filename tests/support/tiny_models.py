"""Tiny ONNX models built with onnx.helper (no TensorFlow), published like real ones.

``tiny``: 8x8 grayscale image -> 8 classes; the brightest row wins (class k = row k).
``tiny-gan``: (latent[4], label) -> 8x8 image whose row ``label`` is bright, so ``tiny``
classifies what ``tiny-gan`` makes as the label asked for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aimass.protocol.manifest import (
    MODEL_FILE,
    BatchingSpec,
    GeneratorSpec,
    Manifest,
    ModelKind,
    Postprocessing,
    Preprocessing,
    TensorSpec,
)

SIDE = 8
CLASSES = 8
LATENT = 4
OPSET = 17


def classifier_model(gain: float = 4.0, hidden: bool = False) -> bytes:
    """``hidden``: a 64x64 layer first (an identity: the same answers), whose 16 KiB of
    weights are large enough for bucket sessions to share (worker/sessions.py)."""
    weights = np.zeros((SIDE * SIDE, CLASSES), dtype=np.float32)
    for row in range(SIDE):
        weights[row * SIDE : (row + 1) * SIDE, row] = gain
    nodes = [helper.make_node("Reshape", ["image", "flat_shape"], ["flat"])]
    initializers = [
        numpy_helper.from_array(np.array([-1, SIDE * SIDE], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(weights, "weights"),
    ]
    if hidden:
        nodes.append(helper.make_node("MatMul", ["flat", "hidden_weights"], ["features"]))
        initializers.append(
            numpy_helper.from_array(np.eye(SIDE * SIDE, dtype=np.float32), "hidden_weights")
        )
    nodes += [
        helper.make_node("MatMul", ["features" if hidden else "flat", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIDE, SIDE, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=initializers,
    )
    return serialize(graph)


def generator_model() -> bytes:
    rng = np.random.default_rng(0)
    latent_weights = (rng.standard_normal((LATENT, SIDE * SIDE)) * 0.1).astype(np.float32)
    label_weights = np.full((CLASSES, SIDE * SIDE), -3.0, dtype=np.float32)
    for label in range(CLASSES):
        label_weights[label, label * SIDE : (label + 1) * SIDE] = 3.0
    graph = helper.make_graph(
        [
            helper.make_node("OneHot", ["label", "depth", "onehot_values"], ["onehot"], axis=-1),
            helper.make_node("MatMul", ["onehot", "label_weights"], ["from_label"]),
            helper.make_node("MatMul", ["latent", "latent_weights"], ["from_latent"]),
            helper.make_node("Add", ["from_label", "from_latent"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["flat"]),
            helper.make_node("Reshape", ["flat", "image_shape"], ["image"]),
        ],
        "tiny-gan",
        [
            helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["N", LATENT]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIDE, SIDE, 1])],
        initializer=[
            numpy_helper.from_array(np.array(CLASSES, dtype=np.int64), "depth"),
            numpy_helper.from_array(np.array([0.0, 1.0], dtype=np.float32), "onehot_values"),
            numpy_helper.from_array(label_weights, "label_weights"),
            numpy_helper.from_array(latent_weights, "latent_weights"),
            numpy_helper.from_array(np.array([-1, SIDE, SIDE, 1], dtype=np.int64), "image_shape"),
        ],
    )
    return serialize(graph)


def conditioned_generator_model(condition_size: int = 0) -> bytes:
    """``latent[4]`` alone (``condition_size`` 0: an unconditional generator), or with a
    float ``condition`` vector whose value k brightens row k (so that ``tiny`` classifies
    an image made with a large value at k as k) -> an 8x8 image."""
    rng = np.random.default_rng(1)
    latent_weights = (rng.standard_normal((LATENT, SIDE * SIDE)) * 0.5).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["latent", "latent_weights"], ["pre"])]
    inputs = [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["N", LATENT])]
    initializers = [
        numpy_helper.from_array(latent_weights, "latent_weights"),
        numpy_helper.from_array(np.array([-1, SIDE, SIDE, 1], dtype=np.int64), "image_shape"),
    ]
    if condition_size:
        rows = np.zeros((condition_size, SIDE * SIDE), dtype=np.float32)
        for k in range(min(condition_size, SIDE)):
            rows[k, k * SIDE : (k + 1) * SIDE] = 1.0
        nodes = [
            helper.make_node("MatMul", ["latent", "latent_weights"], ["from_latent"]),
            helper.make_node("MatMul", ["condition", "condition_weights"], ["from_condition"]),
            helper.make_node("Add", ["from_latent", "from_condition"], ["pre"]),
        ]
        inputs.append(
            helper.make_tensor_value_info("condition", TensorProto.FLOAT, ["N", condition_size])
        )
        initializers.append(numpy_helper.from_array(rows, "condition_weights"))
    nodes += [
        helper.make_node("Tanh", ["pre"], ["flat"]),
        helper.make_node("Reshape", ["flat", "image_shape"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-conditioned-gan",
        inputs,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIDE, SIDE, 1])],
        initializer=initializers,
    )
    return serialize(graph)


def publish_conditioned_generator(repository: Path, name: str, condition_size: int) -> Path:
    """A generator of no classes, unconditional or conditioned on a vector, published."""
    model = conditioned_generator_model(condition_size)
    folder = repository / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model)
    inputs = [TensorSpec(name="latent", dtype="float32", shape=[-1, LATENT])]
    if condition_size:
        inputs.append(TensorSpec(name="condition", dtype="float32", shape=[-1, condition_size]))
    Manifest(
        name=name,
        version=1,
        kind=ModelKind.generate,
        sha256=hashlib.sha256(model).hexdigest(),
        inputs=inputs,
        outputs=[TensorSpec(name="image", dtype="float32", shape=[-1, SIDE, SIDE, 1])],
        postprocessing=Postprocessing(),
        generator=GeneratorSpec(
            latent_size=LATENT,
            condition_input="condition" if condition_size else None,
            condition_size=condition_size,
        ),
        batching=BatchingSpec(max_batch_size=16, max_queue_delay_ms=5.0),
        trained=False,
        quality={},
    ).write(folder)
    return folder


def serialize(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish(
    repository: Path,
    name: str,
    version: int,
    kind: ModelKind,
    model: bytes,
    max_batch_size: int = 16,
    max_queue_delay_ms: float = 5.0,
) -> Path:
    folder = repository / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model)
    labels = [str(i) for i in range(CLASSES)]
    common = dict(
        name=name,
        version=version,
        kind=kind,
        labels=labels,
        sha256=hashlib.sha256(model).hexdigest(),
        batching=BatchingSpec(max_batch_size=max_batch_size, max_queue_delay_ms=max_queue_delay_ms),
        trained=False,
        quality={},
    )
    if kind is ModelKind.classify:
        manifest = Manifest(
            inputs=[TensorSpec(name="image", dtype="float32", shape=[-1, SIDE, SIDE, 1])],
            outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, CLASSES])],
            preprocessing=Preprocessing(height=SIDE, width=SIDE, channels=1),
            **common,
        )
    else:
        manifest = Manifest(
            inputs=[
                TensorSpec(name="latent", dtype="float32", shape=[-1, LATENT]),
                TensorSpec(name="label", dtype="int64", shape=[-1]),
            ],
            outputs=[TensorSpec(name="image", dtype="float32", shape=[-1, SIDE, SIDE, 1])],
            postprocessing=Postprocessing(),
            generator=GeneratorSpec(latent_size=LATENT, class_count=CLASSES),
            **common,
        )
    manifest.write(folder)
    return folder


def build_repository(root: Path) -> Path:
    """A repository with ``tiny`` v1 and ``tiny-gan`` v1."""
    publish(root, "tiny", 1, ModelKind.classify, classifier_model())
    publish(root, "tiny-gan", 1, ModelKind.generate, generator_model())
    return root


def row_image(row: int, side: int = SIDE) -> np.ndarray:
    """A uint8 image whose row ``row`` is white: ``tiny`` labels it ``str(row)``."""
    pixels = np.zeros((side, side), dtype=np.uint8)
    pixels[row * side // SIDE : (row + 1) * side // SIDE, :] = 255
    return pixels
