"""A small but real sequence model, built with onnx.helper: one step of an Elman RNN,

    h' = tanh(E[token] + h W + b)        logits = h' V + c

with deterministic numpy weights, a printable-ASCII vocabulary (and a newline) and an
end token. Its graph is one decoding step, as a sequence manifest describes
(``token`` int64 [N], ``state`` float32 [N, H] in; ``logits`` float32 [N, vocabulary],
``next_state`` out). ``reference_greedy`` decodes it with numpy, for tests to compare
with the worker's text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from aimass.protocol.manifest import (
    BatchingSpec,
    ModelKind,
    SequenceSpec,
    SequenceState,
    TensorSpec,
)
from tests.support.tensor_models import publish
from tests.support.tiny_models import serialize

VOCABULARY = [chr(code) for code in range(32, 127)] + ["\n", "<end>"]
END = len(VOCABULARY) - 1


def weights(hidden: int, seed: int = 23) -> dict[str, np.ndarray]:
    """The RNN's weights: ``embedding`` [V, H], ``recurrent`` [H, H], ``bias`` [H],
    ``projection`` [H, V], ``output_bias`` [V]; the end token is made rare, so that
    sequences run long unless told to stop."""
    rng = np.random.default_rng(seed)
    size = len(VOCABULARY)
    output_bias = rng.normal(0, 0.5, size)
    output_bias[END] = -3.0
    return {
        "embedding": rng.normal(0, 1.0, (size, hidden)).astype(np.float32),
        "recurrent": (rng.normal(0, 1.0, (hidden, hidden)) * 0.9 / np.sqrt(hidden)).astype(
            np.float32
        ),
        "bias": rng.normal(0, 0.1, hidden).astype(np.float32),
        "projection": (rng.normal(0, 1.0, (hidden, size)) * 3.0 / np.sqrt(hidden)).astype(
            np.float32
        ),
        "output_bias": output_bias.astype(np.float32),
    }


def step_model(hidden: int = 64, seed: int = 23) -> bytes:
    w = weights(hidden, seed)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embedding", "token"], ["embedded"], axis=0),
            helper.make_node("MatMul", ["state", "recurrent"], ["carried"]),
            helper.make_node("Add", ["embedded", "carried"], ["summed"]),
            helper.make_node("Add", ["summed", "bias"], ["preactivation"]),
            helper.make_node("Tanh", ["preactivation"], ["next_state"]),
            helper.make_node("MatMul", ["next_state", "projection"], ["projected"]),
            helper.make_node("Add", ["projected", "output_bias"], ["logits"]),
        ],
        "tiny-rnn",
        [
            helper.make_tensor_value_info("token", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", hidden]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(VOCABULARY)]),
            helper.make_tensor_value_info("next_state", TensorProto.FLOAT, ["N", hidden]),
        ],
        initializer=[numpy_helper.from_array(array, name) for name, array in w.items()],
    )
    return serialize(graph)


def publish_sequence_model(
    repository: Path,
    name: str = "tiny-rnn",
    hidden: int = 64,
    version: int = 1,
    max_length: int | None = None,
    unknown: bool = False,
) -> Path:
    """Publish the step model with its sequence manifest; ``unknown``: the newline token
    stands for characters the vocabulary lacks."""
    size = len(VOCABULARY)
    return publish(
        repository,
        name,
        step_model(hidden),
        inputs=[
            TensorSpec(name="token", dtype="int64", shape=[-1], value_range=(0, size)),
            TensorSpec(name="state", dtype="float32", shape=[-1, hidden]),
        ],
        outputs=[
            TensorSpec(name="logits", dtype="float32", shape=[-1, size]),
            TensorSpec(name="next_state", dtype="float32", shape=[-1, hidden]),
        ],
        sequence=SequenceSpec(
            vocabulary=VOCABULARY,
            token_input="token",
            logits_output="logits",
            state=[SequenceState(input="state", output="next_state", shape=[hidden])],
            end_token=END,
            unknown_token=VOCABULARY.index("\n") if unknown else None,
            max_length=max_length,
        ),
        kind=ModelKind.sequence,
        version=version,
        batching=BatchingSpec(max_batch_size=64, max_queue_delay_ms=0.0),
    )


def reference_greedy(prompt: str, max_tokens: int, hidden: int = 64) -> str:
    """The text greedy decoding writes after ``prompt``, in numpy."""
    w = weights(hidden)
    state = np.zeros(hidden, dtype=np.float32)
    ids = [VOCABULARY.index(c) for c in prompt]
    logits = np.zeros(len(VOCABULARY), dtype=np.float32)
    for token in ids:
        state, logits = step(w, token, state)
    text = []
    for _ in range(max_tokens):
        token = int(np.argmax(logits))
        if token == END:
            break
        text.append(VOCABULARY[token])
        state, logits = step(w, token, state)
    return "".join(text)


def step(
    w: dict[str, np.ndarray], token: int | np.ndarray, state: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The step's math in numpy, for one token or a row of tokens: (new state, logits)."""
    state = np.tanh(w["embedding"][token] + state @ w["recurrent"] + w["bias"])
    return state, state @ w["projection"] + w["output_bias"]
