"""A classifier that hangs on demand, for time-limit tests: like ``tiny``, but its graph
first runs a Loop whose trip count is the brightest input value times 1e18. An all-black
image (and the worker's warm-up, which feeds zeros) runs no iteration and is answered;
any other image spins in the Loop until the run is interrupted."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.tiny_models import CLASSES, OPSET, SIDE


def _passthrough_body() -> onnx.GraphProto:
    """Loop body: (iteration, condition, x) -> (condition, x + 0)."""
    return helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["x_in", "zero"], ["x_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None),
        ],
        initializer=[numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")],
    )


def hanging_classifier() -> bytes:
    weights = np.zeros((SIDE * SIDE, CLASSES), dtype=np.float32)
    for row in range(SIDE):
        weights[row * SIDE : (row + 1) * SIDE, row] = 4.0
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["image"], ["brightest"], keepdims=0),
            helper.make_node("Mul", ["brightest", "huge"], ["trips_float"]),
            helper.make_node("Cast", ["trips_float"], ["trips"], to=TensorProto.INT64),
            helper.make_node(
                "Loop", ["trips", "keep_going", "image"], ["spun"], body=_passthrough_body()
            ),
            helper.make_node("Reshape", ["spun", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny-hang",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIDE, SIDE, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[
            numpy_helper.from_array(np.array(1e18, dtype=np.float32), "huge"),
            numpy_helper.from_array(np.array(True), "keep_going"),
            numpy_helper.from_array(np.array([-1, SIDE * SIDE], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(weights, "weights"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
