"""The parity gate: ONNX Runtime must reproduce TensorFlow's outputs on the same samples.

Tolerances are on the max absolute difference over every element of every output:

* classifier probabilities: 1e-4. Softmax outputs lie in [0, 1]; float32 kernels that
  sum in a different order differ around 1e-7, so 1e-4 catches a wrong op or layout
  with a wide margin while never failing on rounding.
* generator images: 1e-3 on tanh outputs in [-1, 1]. Transposed convolutions and batch
  normalisation accumulate more rounding; 1e-3 is an eighth of one 8-bit grey level
  (2/255), so no published pixel can change by more than one level.
* an embedding: 1e-3 on ReLU activations of order 1 to 10 (a relative 1e-4 or better).
* a regression: 1e-2 in the target's own unit, on values of order 100 (diabetes
  progression): float32 rounds such values at about 1e-5.
* a sequence model's decoding step: 1e-3 on its logits and its state, compared at every
  step of a run of several steps in a row in which TensorFlow and ONNX Runtime each feed
  their own new state back (``check_step_parity``), so that rounding that grows from
  step to step is caught as it would be in decoding. Logits of order 10 round at about
  1e-6 per step; a wrong gate or a state wired to the wrong output differs by 1e-1 or
  more within a few steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aimass.export.errors import ParityError
from aimass.export.sessions import cpu_session

CLASSIFIER_TOLERANCE = 1e-4
GENERATOR_TOLERANCE = 1e-3
EMBEDDING_TOLERANCE = 1e-3
REGRESSION_TOLERANCE = 1e-2
SEQUENCE_TOLERANCE = 1e-3


def check_parity(
    model_name: str,
    model: bytes | Path,
    feeds: Mapping[str, NDArray[np.generic]],
    reference: Mapping[str, NDArray[np.generic]],
    tolerance: float | Mapping[str, float],
) -> float:
    """Run ``model`` on ``feeds`` and compare with TensorFlow's ``reference`` outputs.

    Returns the max abs error over all outputs; raises ParityError above ``tolerance``
    (one for every output, or one per output name; a NaN anywhere counts as an infinite
    error).
    """
    tolerances = (
        dict(tolerance) if isinstance(tolerance, Mapping) else dict.fromkeys(reference, tolerance)
    )
    for value in tolerances.values():
        if not value >= 0:
            raise ValueError(f"the parity tolerance must be a number >= 0, got {value}")
    session = cpu_session(model)
    names = [output.name for output in session.get_outputs()]
    produced = dict(zip(names, session.run(names, dict(feeds)), strict=True))
    return _compare(model_name, produced, reference, tolerances)


def _compare(
    model_name: str,
    produced: Mapping[str, Any],
    reference: Mapping[str, Any],
    tolerances: Mapping[str, float],
    where: str = "",
) -> float:
    """The max abs error over ``reference``'s outputs; raises ParityError naming the
    first one past its tolerance (a missing output is infinitely wrong)."""
    worst = 0.0
    for name, expected in reference.items():
        allowed = tolerances[name]
        actual = produced.get(name)
        error = (
            float("inf")
            if actual is None
            else _max_abs_error(np.asarray(actual), np.asarray(expected))
        )
        if not error <= allowed:
            raise ParityError(model_name, name, error, allowed, where)
        worst = max(worst, error)
    return worst


Feeds = Mapping[str, NDArray[np.generic]]


def check_step_parity(
    model_name: str,
    model: bytes | Path,
    reference_step: Callable[[Feeds], Feeds],
    steps: list[Feeds],
    carried: Mapping[str, str],
    tolerance: float,
) -> float:
    """Run a decoding step ``len(steps)`` times in a row in ONNX Runtime and in TensorFlow
    (``reference_step``), comparing every output at every step.

    ``steps`` holds each step's fresh inputs (the tokens); ``carried`` maps each state
    output to the input it feeds at the next step; the first step's state inputs are in
    ``steps[0]``. Each side is fed its own state back. Returns the max abs error over all
    outputs and steps; raises ParityError naming the output and the step.
    """
    session = cpu_session(model)
    names = [output.name for output in session.get_outputs()]
    reference_state: dict[str, NDArray[np.generic]] = {}
    runtime_state: dict[str, NDArray[np.generic]] = {}
    worst = 0.0
    for index, fresh in enumerate(steps, start=1):
        expected = reference_step({**fresh, **reference_state})
        produced = dict(zip(names, session.run(names, {**fresh, **runtime_state}), strict=True))
        where = f" at step {index} of {len(steps)}"
        tolerances = dict.fromkeys(expected, tolerance)
        worst = max(worst, _compare(model_name, produced, expected, tolerances, where))
        reference_state = {carried[name]: np.asarray(expected[name]) for name in carried}
        runtime_state = {carried[name]: np.asarray(produced[name]) for name in carried}
    return worst


def _max_abs_error(actual: NDArray[np.generic], expected: NDArray[np.generic]) -> float:
    if actual.shape != expected.shape:
        return float("inf")
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return float("inf") if np.isnan(difference).any() else float(difference.max(initial=0.0))
