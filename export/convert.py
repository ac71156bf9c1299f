"""TensorFlow to ONNX: servable functions with named inputs and outputs, and tf2onnx.

Keras 3 models are never handed to tf2onnx directly: ``from_keras`` names outputs after
the last layer and trips over Keras 3's functional internals. Each model is wrapped in
a ``tf.function`` whose input signature names every input and whose result is a dict
naming every output; tf2onnx keeps those names, so the ONNX graph reads
``image -> probabilities`` or ``latent, label -> image`` whatever the user's layers are
called. Every signature has a ``None`` batch dimension, which becomes -1 in the ONNX
graph and in the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import tensorflow as tf

from aimass.export.errors import ConversionError
from aimass.export.opsets import DEFAULT_OPSET, MIN_OPSET
from aimass.protocol.manifest import TensorSpec

IMAGE = "image"
PROBABILITIES = "probabilities"
LATENT = "latent"
LABEL = "label"
CONDITION = "condition"


ServableFunction = Any  # a tf.function with an input_signature; TF exports no usable type


def max_opset() -> int:
    from tf2onnx import constants

    return max(constants.OPSET_TO_IR_VERSION)


def check_opset(opset: int) -> None:
    highest = max_opset()
    if not MIN_OPSET <= opset <= highest:
        raise ConversionError(
            f"opset {opset} is not supported: expected {MIN_OPSET}..{highest} "
            f"(tf2onnx's newest is {highest}; default {DEFAULT_OPSET})"
        )


def classifier_function(
    predict: Callable[[tf.Tensor], tf.Tensor], height: int, width: int, channels: int
) -> ServableFunction:
    """``image`` float32 (batch, height, width, channels) -> ``probabilities`` (batch, classes)."""
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=IMAGE)]

    @tf.function(input_signature=signature, autograph=False)
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {PROBABILITIES: tf.identity(predict(image))}

    return serve


def named_outputs_function(
    predict: Callable[[tf.Tensor], list[tf.Tensor]],
    input_spec: tf.TensorSpec,
    output_names: list[str],
) -> ServableFunction:
    """One named input -> the model's outputs under ``output_names``, in order."""

    @tf.function(input_signature=[input_spec], autograph=False)
    def serve(tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        results = predict(tensor)
        return {name: tf.identity(r) for name, r in zip(output_names, results, strict=True)}

    return serve


def generator_function(
    generate: Callable[..., tf.Tensor],
    latent_size: int,
    label_dtype: tf.DType | None = None,
    condition_size: int = 0,
) -> ServableFunction:
    """``latent`` float32 (batch, latent_size), and with ``label_dtype`` a ``label``
    (batch,), or with ``condition_size`` a float32 ``condition`` (batch, condition_size),
    -> ``image`` (batch, height, width, channels). Neither: an unconditional generator."""
    latent = tf.TensorSpec((None, latent_size), tf.float32, name=LATENT)
    if label_dtype is not None:
        second: tf.TensorSpec | None = tf.TensorSpec((None,), label_dtype, name=LABEL)
    elif condition_size:
        second = tf.TensorSpec((None, condition_size), tf.float32, name=CONDITION)
    else:
        second = None
    if second is None:

        @tf.function(input_signature=[latent], autograph=False)
        def serve_latent(latent: tf.Tensor) -> dict[str, tf.Tensor]:
            return {IMAGE: tf.identity(generate(latent))}

        return serve_latent

    @tf.function(input_signature=[latent, second], autograph=False)
    def serve(latent: tf.Tensor, given: tf.Tensor) -> dict[str, tf.Tensor]:
        return {IMAGE: tf.identity(generate(latent, given))}

    return serve


# Domains whose ops ONNX Runtime brings itself, beyond ONNX's own.
_RUNTIME_DOMAINS = frozenset({"com.microsoft"})


def unconverted_ops(model: Any) -> list[tuple[str, str]]:
    """(op type, node name) of each node that is no ONNX op: what tf2onnx left as the
    TensorFlow op it could not convert (it logs it and goes on), in the graph and in the
    graphs of its If and Loop nodes."""
    found = []
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            domain = node.domain or ""
            if domain not in _RUNTIME_DOMAINS and not onnx.defs.has(node.op_type, domain):
                found.append((node.op_type, node.name))
            for attribute in node.attribute:
                graphs += [attribute.g] if attribute.HasField("g") else []
                graphs += list(attribute.graphs)
    return found


def run_function(function: ServableFunction, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TensorFlow's outputs for ``feeds``: the reference that ONNX Runtime must match."""
    # By position, in the signature's order: a signature's names need not be Python names.
    outputs = function(*[tf.constant(feeds[spec.name]) for spec in function.input_signature])
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def to_onnx(function: ServableFunction, opset: int) -> bytes:
    """Convert with tf2onnx and check that the graph has exactly the signature's names."""
    import tf2onnx

    check_opset(opset)
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its INFO lines drown progress
    signature = tuple(function.input_signature)
    expected_outputs = sorted(function.get_concrete_function().structured_outputs)
    # tf2onnx's large-model path keeps big weights out of the graph protobuf while its
    # optimisers copy the graph again and again: AlexNet converts in 20 s instead of 100 s,
    # with 3 GB less memory. That path still calls np.product, which NumPy 2 removed.
    if not hasattr(np, "product"):
        setattr(np, "product", np.prod)  # noqa: B010 - mypy rejects the plain assignment
    try:
        model, storage = tf2onnx.convert.from_function(
            function, input_signature=signature, opset=opset, large_model=True
        )
        _inline_external_tensors(model, storage.name_to_tensor_data)
    except Exception as error:  # tf2onnx raises bare Exceptions and ValueErrors alike
        raise ConversionError(
            f"tf2onnx could not convert the model at opset {opset}: {error}. Expected layers "
            "that tf2onnx supports; a newer --opset sometimes helps"
        ) from error
    unconverted = unconverted_ops(model)
    if unconverted:
        ops = sorted({op for op, _ in unconverted})
        where = "; ".join(f"{op} at {node}" for op, node in unconverted[:3])
        raise ConversionError(
            f"tf2onnx could not convert {len(unconverted)} op(s) to ONNX at opset {opset}: "
            f"{', '.join(ops)} ({where}). The node names carry the Keras layer's name: "
            "replace that layer by one built of ops that tf2onnx supports, or try a newer "
            "--opset. Nothing was published"
        )
    inputs = [value.name for value in model.graph.input]
    outputs = sorted(value.name for value in model.graph.output)
    if inputs != [spec.name for spec in signature] or outputs != expected_outputs:
        raise ConversionError(
            f"the converted graph has inputs {inputs} and outputs {outputs}; expected inputs "
            f"{[spec.name for spec in signature]} and outputs {expected_outputs}"
        )
    return bytes(model.SerializeToString())


def _inline_external_tensors(model: onnx.ModelProto, data: dict[str, bytes]) -> None:
    """Put the weights that tf2onnx set aside back into the graph: one self-contained file."""
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next(
                entry.value for entry in tensor.external_data if entry.key == "location"
            )
            tensor.raw_data = data[location]
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT


def tensor_specs(model_bytes: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs as manifest specs; unknown dimensions become -1."""
    graph = onnx.load_model_from_string(model_bytes).graph
    return [_spec(value) for value in graph.input], [_spec(value) for value in graph.output]


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)
