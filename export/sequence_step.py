"""A sequence model's decoding step: the servable function, its conversion and the
multi-step parity gate.

The published graph is one step (``aimass.protocol.manifest.SequenceSpec``): ``token``
int64 (batch,) and each state tensor (batch, *shape) in; ``logits`` float32 (batch,
vocabulary) and each new state out. Whatever the model's own names and dtypes, the step
function casts the token to what the model takes and its logits to float32; states keep
their dtype, as a worker carries them from step to step unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from aimass.export.convert import ServableFunction, run_function, tensor_specs, to_onnx
from aimass.export.parity import Feeds, check_step_parity
from aimass.export.publish import Candidate
from aimass.export.repository import Progress
from aimass.protocol.manifest import ModelKind, SequenceState

TOKEN = "token"
LOGITS = "logits"
PARITY_STEPS = 32  # steps in a row in the parity gate
PARITY_STREAMS = 8  # sequences decoded side by side in it

# (token ids (batch,), states) -> (logits (batch, vocabulary), new states), in TensorFlow.
Step = Callable[[tf.Tensor, list[tf.Tensor]], tuple[tf.Tensor, list[tf.Tensor]]]


@dataclass(frozen=True)
class StepSignature:
    """The published step graph's names: the token input, the logits output, and each
    state's input and output (with its shape per sequence and dtype)."""

    states: tuple[SequenceState, ...]
    token: str = TOKEN
    logits: str = LOGITS

    def zero_states(self, batch: int) -> dict[str, NDArray[np.generic]]:
        """What a new sequence starts from: every state zero."""
        return {s.input: np.zeros((batch, *s.shape), dtype=s.dtype) for s in self.states}


def step_function(step: Step, signature: StepSignature) -> ServableFunction:
    """A tf.function of one decoding step with the signature's names."""
    specs = [tf.TensorSpec((None,), tf.int64, name=signature.token)] + [
        tf.TensorSpec((None, *s.shape), tf.as_dtype(s.dtype), name=s.input)
        for s in signature.states
    ]

    @tf.function(input_signature=specs, autograph=False)
    def serve(token: tf.Tensor, *states: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, new_states = step(token, list(states))
        named = {signature.logits: tf.identity(tf.cast(logits, tf.float32))}
        for state, value in zip(signature.states, new_states, strict=True):
            named[state.output] = tf.identity(value)
        return named

    return serve


def parity_tokens(tokens: NDArray[np.integer], streams: int = PARITY_STREAMS) -> NDArray[np.int64]:
    """(PARITY_STEPS, streams) token ids: ``streams`` consecutive runs of ``tokens``, one
    column per sequence, fed a row a step."""
    needed = PARITY_STEPS * streams
    if len(tokens) < needed:
        tokens = np.resize(tokens, needed)  # a short text repeats
    return np.asarray(tokens[:needed], dtype=np.int64).reshape(streams, PARITY_STEPS).T.copy()


def convert_step_checked(
    name: str,
    function: ServableFunction,
    signature: StepSignature,
    tokens: NDArray[np.int64],
    tolerance: float,
    opset: int,
    progress: Progress,
) -> Candidate:
    """Convert the step with tf2onnx and run it ``len(tokens)`` steps in a row in ONNX
    Runtime and TensorFlow from zero states, each fed its own new state back, comparing
    logits and states at every step. Raises ConversionError or ParityError; the
    repository is not touched."""
    progress(f"{name}: converting one decoding step to ONNX with tf2onnx (opset {opset})")
    model_bytes = to_onnx(function, opset)
    steps: list[Feeds] = [{signature.token: row} for row in tokens]
    steps[0] = {**steps[0], **signature.zero_states(tokens.shape[1])}
    carried = {s.output: s.input for s in signature.states}

    def reference(feeds: Feeds) -> Feeds:
        return run_function(function, dict(feeds))

    error = check_step_parity(name, model_bytes, reference, steps, carried, tolerance)
    progress(
        f"{name}: parity max abs error {error:.3g} over {len(steps)} steps in a row, "
        f"{tokens.shape[1]} sequences (tolerance {tolerance:.3g})"
    )
    inputs, outputs = tensor_specs(model_bytes)
    return Candidate(
        name, ModelKind.sequence, model_bytes, inputs, outputs, opset, error, tolerance
    )
