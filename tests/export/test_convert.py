"""Conversion of small Keras models and the parity gate."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from onnx import numpy_helper

from aimass.export.convert import (
    classifier_function,
    generator_function,
    run_function,
    tensor_specs,
    to_onnx,
)
from aimass.export.errors import ConversionError, ParityError
from aimass.export.parity import CLASSIFIER_TOLERANCE, check_parity
from aimass.export.sessions import cpu_session

pytestmark = pytest.mark.export


def small_classifier() -> Any:
    keras.utils.set_random_seed(1)
    image = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(image, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def converted() -> tuple[object, bytes]:
    model = small_classifier()
    function = classifier_function(lambda image: model(image, training=False), 8, 8, 1)
    return function, to_onnx(function, opset=17)


def test_small_keras_model_matches_in_onnx_runtime(converted: tuple[object, bytes]) -> None:
    function, model_bytes = converted
    feeds = {"image": np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)}
    reference = run_function(function, feeds)

    error = check_parity("small", model_bytes, feeds, reference, CLASSIFIER_TOLERANCE)

    assert error <= CLASSIFIER_TOLERANCE
    onnx.checker.check_model(onnx.load_model_from_string(model_bytes))
    outputs = cpu_session(model_bytes).run(None, feeds)[0]
    assert outputs.shape == (5, 3)
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-5)


def test_graph_has_named_inputs_and_a_dynamic_batch(converted: tuple[object, bytes]) -> None:
    _, model_bytes = converted
    inputs, outputs = tensor_specs(model_bytes)
    assert [(s.name, s.dtype, s.shape) for s in inputs] == [("image", "float32", [-1, 8, 8, 1])]
    assert [(s.name, s.dtype, s.shape) for s in outputs] == [("probabilities", "float32", [-1, 3])]
    session = cpu_session(model_bytes)
    for batch in (1, 7):
        result = session.run(None, {"image": np.zeros((batch, 8, 8, 1), np.float32)})[0]
        assert result.shape == (batch, 3)


def test_generator_signature_names_latent_and_label() -> None:
    latent = keras.Input((4,))
    label = keras.Input((), dtype="int64")
    embedded = keras.layers.Embedding(3, 4)(label)
    x = keras.layers.Dense(16, activation="tanh")(keras.layers.Concatenate()([latent, embedded]))
    model = keras.Model([latent, label], keras.layers.Reshape((4, 4, 1))(x))
    function = generator_function(
        lambda z, y: model([z, y], training=False), latent_size=4, label_dtype=tf.int64
    )

    inputs, outputs = tensor_specs(to_onnx(function, opset=17))

    assert [(s.name, s.dtype, s.shape) for s in inputs] == [
        ("latent", "float32", [-1, 4]),
        ("label", "int64", [-1]),
    ]
    assert [(s.name, s.shape) for s in outputs] == [("image", [-1, 4, 4, 1])]


@pytest.mark.parametrize("opset", [9, 99])
def test_unsupported_opset_is_refused(converted: tuple[object, bytes], opset: int) -> None:
    function, _ = converted
    with pytest.raises(
        ConversionError, match=rf"opset {opset} is not supported: expected 13\.\.18"
    ):
        to_onnx(function, opset)


def test_tampered_model_fails_the_parity_gate(converted: tuple[object, bytes]) -> None:
    function, model_bytes = converted
    model = onnx.load_model_from_string(model_bytes)
    weights = max(model.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    values = numpy_helper.to_array(weights)
    noise = np.random.default_rng(2).normal(0, 0.5, values.shape).astype(np.float32)
    weights.CopyFrom(numpy_helper.from_array(values + noise, weights.name))
    feeds = {"image": np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)}
    reference = run_function(function, feeds)

    with pytest.raises(ParityError) as raised:
        check_parity("small", model.SerializeToString(), feeds, reference, CLASSIFIER_TOLERANCE)

    message = str(raised.value)
    assert raised.value.measured > CLASSIFIER_TOLERANCE
    assert f"by up to {raised.value.measured:.3g}" in message
    assert "more than the allowed 0.0001" in message
    assert "'probabilities'" in message


def test_tolerance_zero_fails_on_any_rounding_difference() -> None:
    reference = {"probabilities": np.array([[0.25, 0.75]], np.float32)}
    nudged = np.nextafter(np.float32(0.75), np.float32(1))
    feeds = {"x": np.array([[0.25, nudged]], np.float32)}
    check_parity("exact", _identity_model(), {"x": reference["probabilities"]}, reference, 0.0)
    with pytest.raises(ParityError, match=r"by up to 5\.96e-08 .* allowed 0"):
        check_parity("exact", _identity_model(), feeds, reference, tolerance=0.0)


def _identity_model() -> bytes:
    """probabilities = Identity(x): what is fed comes back as the output."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["probabilities"])],
        "identity",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, 2])],
    )
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8
    )
    return bytes(model.SerializeToString())


def test_local_response_normalisation_converts_within_tolerance() -> None:
    from aimass.export.zoo.alexnet import LocalResponseNormalization

    keras.utils.set_random_seed(2)
    image = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = LocalResponseNormalization()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(image, keras.layers.Dense(4, activation="softmax")(x))
    function = classifier_function(lambda tensor: model(tensor, training=False), 6, 6, 3)
    model_bytes = to_onnx(function, opset=17)
    feeds = {"image": np.random.default_rng(0).random((4, 6, 6, 3), dtype=np.float32) * 50}

    check_parity("lrn", model_bytes, feeds, run_function(function, feeds), CLASSIFIER_TOLERANCE)

    ops = {node.op_type for node in onnx.load_model_from_string(model_bytes).graph.node}
    assert "LRN" in ops


def test_alexnet_has_the_papers_shape() -> None:
    from aimass.export.zoo.alexnet import build_alexnet

    model = build_alexnet()
    assert model.count_params() == 62_378_344
    assert tuple(model.input.shape) == (None, 227, 227, 3)
    assert [
        tuple(model.get_layer(name).output.shape[1:]) for name in ("conv1", "pool2", "pool5")
    ] == [
        (55, 55, 96),
        (13, 13, 256),
        (6, 6, 256),
    ]
    assert tuple(model.output.shape) == (None, 1000)
