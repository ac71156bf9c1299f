"""The models a benchmark serves: the exported ones, or seeded stand-ins of the same shape.

Stand-ins are built with onnx.helper (random weights, no TensorFlow) and published into
a temporary repository with a proper manifest, so that the worker loads them exactly as
it loads exported models. They are only used when the caller allows it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aimass.protocol.manifest import (
    MODEL_FILE,
    BatchingSpec,
    Manifest,
    ModelKind,
    Preprocessing,
    Source,
    TensorSpec,
    published_versions,
    version_folder,
)

OPSET = 17
SEED = 2012
# The manifest's source.framework of a stand-in: how a repository's model is recognised
# as one, wherever it was published.
STAND_IN_FRAMEWORK = "onnx.helper (aimass bench stand-in, random weights)"

# Batching limits of the stand-ins; exported models bring their own in their manifest.
# Chosen where ONNX Runtime alone stops gaining on this class of machine (2 CPU cores).
STAND_IN_BATCHING = {
    "digits": BatchingSpec(max_batch_size=64, max_queue_delay_ms=2.0),
    "alexnet": BatchingSpec(max_batch_size=16, max_queue_delay_ms=5.0),
}


@dataclass(frozen=True)
class BenchModel:
    """One model as the benchmark uses it: where it lives and what it expects."""

    name: str
    repository: Path
    manifest: Manifest
    synthetic: bool  # a seeded stand-in, not the exported model

    @property
    def folder(self) -> Path:
        return self.repository / self.name / str(self.manifest.version)

    @property
    def model_file(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def input_shape(self) -> list[int]:
        """The shape of one input without the batch dimension (``[32, 32, 1]``)."""
        return list(self.manifest.inputs[0].shape[1:])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.manifest.version,
            "origin": "synthetic" if self.synthetic else "exported",
            "trained": self.manifest.trained,
            "repository": str(self.repository),
            "model_file_bytes": self.model_file.stat().st_size,
            "input_shape": self.input_shape,
            "classes": self.manifest.outputs[0].shape[-1],
            "max_batch_size": self.manifest.batching.max_batch_size,
            "max_queue_delay_ms": self.manifest.batching.max_queue_delay_ms,
            "source": self.manifest.source.model_dump(mode="json"),
        }


class ModelMissing(Exception):
    """The repository lacks the model and stand-ins were not allowed."""


def find_model(name: str, repository: Path, synthetic_root: Path | None) -> BenchModel:
    """The newest version of ``name`` in ``repository``; else, when ``synthetic_root`` is
    given, a stand-in published there; else ``ModelMissing`` saying what to do."""
    versions = published_versions(repository, name)
    if versions:
        manifest = Manifest.read(version_folder(repository, name, versions[-1]))
        synthetic = manifest.source.framework == STAND_IN_FRAMEWORK
        return BenchModel(name, repository, manifest, synthetic=synthetic)
    if synthetic_root is None:
        raise ModelMissing(
            f"model {name!r} is not in {repository}: export it with `aimass export zoo` "
            f"(writes ./models/{name}/1), point --repository at a repository that has it, "
            "or pass --allow-synthetic to benchmark a seeded stand-in of the same shape"
        )
    folder = publish_stand_in(synthetic_root, name)
    return BenchModel(name, synthetic_root, Manifest.read(folder), synthetic=True)


def publish_stand_in(repository: Path, name: str) -> Path:
    """Build the stand-in for ``name`` and publish it as version 1 of ``repository``."""
    builders = {"digits": (digits_graph, 32, 1, 10), "alexnet": (alexnet_graph, 227, 3, 1000)}
    if name not in builders:
        raise ModelMissing(f"no stand-in for model {name!r}: expected digits or alexnet")
    build, side, channels, classes = builders[name]
    model = _serialize(build())
    folder = repository / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model)
    labels = (
        [str(i) for i in range(classes)]
        if classes == 10
        else [f"class-{i}" for i in range(classes)]
    )
    Manifest(
        name=name,
        version=1,
        kind=ModelKind.classify,
        inputs=[TensorSpec(name="image", dtype="float32", shape=[-1, side, side, channels])],
        outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, classes])],
        preprocessing=Preprocessing(height=side, width=side, channels=channels),
        labels=labels,
        batching=STAND_IN_BATCHING[name],
        sha256=hashlib.sha256(model).hexdigest(),
        source=Source(framework=STAND_IN_FRAMEWORK, onnx_opset=OPSET),
        trained=False,
        quality={},
    ).write(folder)
    return folder


class _Graph:
    """A small builder for sequential conv nets: NHWC image in, softmax out."""

    def __init__(self, side: int, channels: int) -> None:
        from onnx import TensorProto, helper

        self.helper = helper
        self.rng = np.random.default_rng(SEED)
        self.nodes: list[Any] = [
            helper.make_node("Transpose", ["image"], ["x0"], perm=[0, 3, 1, 2])
        ]
        self.initializers: list[Any] = []
        self.inputs = [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", side, side, channels])
        ]
        self.last = "x0"
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def _weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        from onnx import numpy_helper

        name = self._name("w")
        values = self.rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(np.sqrt(2.0 / fan_in))
        self.initializers.append(numpy_helper.from_array(values, name))
        bias = self._name("b")
        self.initializers.append(
            numpy_helper.from_array(
                np.zeros(shape[0] if len(shape) == 4 else shape[1], np.float32), bias
            )
        )
        return name

    def op(self, op_type: str, *extra_inputs: str, source: str | None = None, **attrs: Any) -> str:
        out = self._name("x")
        self.nodes.append(
            self.helper.make_node(op_type, [source or self.last, *extra_inputs], [out], **attrs)
        )
        self.last = out
        return out

    def conv(
        self,
        channels_in: int,
        channels_out: int,
        kernel: int,
        stride: int = 1,
        pad: int = 0,
        relu: bool = True,
        source: str | None = None,
    ) -> str:
        weight = self._weight(
            (channels_out, channels_in, kernel, kernel), channels_in * kernel * kernel
        )
        bias = self.initializers[-1].name
        self.op(
            "Conv",
            weight,
            bias,
            source=source,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
        )
        return self.op("Relu") if relu else self.last

    def pool(self, pads: tuple[int, int, int, int] = (0, 0, 0, 0)) -> str:
        return self.op("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=list(pads))

    def dense(self, size_in: int, size_out: int, relu: bool = True) -> str:
        weight = self._weight((size_in, size_out), size_in)
        self.op("Gemm", weight, self.initializers[-1].name)
        return self.op("Relu") if relu else self.last

    def finish(self, name: str, classes: int) -> Any:
        from onnx import TensorProto

        self.nodes.append(self.helper.make_node("Softmax", [self.last], ["probabilities"], axis=1))
        output = self.helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, ["N", classes]
        )
        return self.helper.make_graph(
            self.nodes, name, self.inputs, [output], initializer=self.initializers
        )


def digits_graph() -> Any:
    """The shape of export/zoo/digits.py with batch norm folded: 32x32x1 -> 10."""
    g = _Graph(32, 1)
    g.conv(1, 32, 5, stride=2, pad=2)  # 16x16
    trunk = g.pool((0, 0, 1, 1))  # 8x8 ("same" pooling pads at the end, as TensorFlow does)
    shortcut = g.conv(32, 64, 1, relu=False, source=trunk)
    g.conv(32, 64, 3, pad=1, source=trunk)
    main = g.conv(64, 64, 3, pad=1, relu=False)
    g.op("Add", shortcut, source=main)
    g.op("Relu")
    g.pool((0, 0, 1, 1))  # 4x4
    g.conv(64, 128, 3, pad=1)
    g.pool((0, 0, 1, 1))  # 2x2
    g.op("Flatten", axis=1)
    g.dense(2 * 2 * 128, 128)
    g.dense(128, 10, relu=False)
    return g.finish("digits-stand-in", 10)


def alexnet_graph() -> Any:
    """AlexNet as in the 2012 paper, one tower (~62M parameters): 227x227x3 -> 1000."""
    g = _Graph(227, 3)
    lrn: dict[str, Any] = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 2.0}
    g.conv(3, 96, 11, stride=4)  # 55x55
    g.op("LRN", **lrn)
    g.pool()  # 27x27
    g.conv(96, 256, 5, pad=2)
    g.op("LRN", **lrn)
    g.pool()  # 13x13
    g.conv(256, 384, 3, pad=1)
    g.conv(384, 384, 3, pad=1)
    g.conv(384, 256, 3, pad=1)
    g.pool()  # 6x6
    g.op("Flatten", axis=1)
    g.dense(6 * 6 * 256, 4096)
    g.dense(4096, 4096)
    g.dense(4096, 1000, relu=False)
    return g.finish("alexnet-stand-in", 1000)


def _serialize(graph: Any) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
