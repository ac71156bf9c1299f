"""The tensor kind: a model published with every input and output as it is.

Whatever a Keras model or a SavedModel signature takes and returns (any number of
tensors, of the datatypes jobs carry) becomes a servable function with one named input
per model input and one named output per model output. The parity gate feeds it random
inputs drawn to fit each tensor (integers from the range the user gives, an embedding's
vocabulary) or the user's own sample, at two sizes of every open dimension.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from aimass.export.convert import ServableFunction
from aimass.export.errors import UnsupportedModelError
from aimass.protocol.tensors import DATATYPES

PARITY_ROWS = 8
OPEN_SIZES = (3, 5)  # an open dimension's sizes in the two parity samples
DEFAULT_INT_RANGE = (0, 2)  # valid for any embedding or lookup of at least 2 entries
FLOAT_TOLERANCE = 1e-4  # as a classifier's: float32 kernels differ around 1e-6 here
EXACT = 0.0  # integer and boolean outputs must agree exactly


@dataclass(frozen=True)
class Tensor:
    """One input or output of the model, under the name the published graph gives it."""

    name: str  # the graph's name: the model's, made safe for ONNX and JSON
    source: str  # the model's own name
    dtype: tf.DType
    shape: tuple[int | None, ...]


def graph_names(names: Sequence[str]) -> list[str]:
    """Names made of letters, digits, ``_``, ``.`` and ``-``, unique."""
    cleaned: list[str] = []
    for name in names:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "tensor"
        while safe in cleaned:
            safe += "_"
        cleaned.append(safe)
    return cleaned


def tensors_of(
    items: Sequence[tuple[str, tf.DType, tuple[int | None, ...]]], what: str, path: Path
) -> list[Tensor]:
    """The model's inputs or outputs, refusing a datatype no job can carry."""
    names = graph_names([name for name, _, _ in items])
    tensors = []
    for name, (source, dtype, shape) in zip(names, items, strict=True):
        if dtype.name not in DATATYPES:
            raise UnsupportedModelError(
                f"{path}'s {what} '{source}' is {dtype.name}; tensor jobs carry "
                f"{', '.join(DATATYPES)} ({', '.join(DATATYPES.values())})"
            )
        tensors.append(Tensor(name, source, dtype, shape))
    return tensors


def is_batched(inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> bool:
    """Every input and output leads with an open dimension: the batch one."""
    return all(len(t.shape) >= 1 and t.shape[0] is None for t in [*inputs, *outputs])


def tensor_function(
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    call_all: Callable[[list[tf.Tensor]], list[tf.Tensor]],
) -> ServableFunction:
    """A function with one named input per model input and a dict of named outputs."""
    signature = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in inputs]

    @tf.function(input_signature=signature, autograph=False)
    def serve(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        results = call_all(list(tensors))
        return {t.name: tf.identity(r) for t, r in zip(outputs, results, strict=True)}

    return serve


def random_feeds(
    inputs: Sequence[Tensor],
    batched: bool,
    int_ranges: Mapping[str, tuple[int, int]],
    open_size: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Inputs drawn to fit each tensor's dtype, open dimensions at ``open_size``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for tensor in inputs:
        shape = [
            PARITY_ROWS if (batched and axis == 0) else (open_size if dim is None else dim)
            for axis, dim in enumerate(tensor.shape)
        ]
        dtype = np.dtype(tensor.dtype.as_numpy_dtype)
        if dtype.kind == "f":
            feeds[tensor.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[tensor.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            low, high = int_range(tensor, int_ranges, dtype)
            feeds[tensor.name] = rng.integers(low, high, shape).astype(dtype)
    return feeds


def int_range(
    tensor: Tensor, int_ranges: Mapping[str, tuple[int, int]], dtype: np.dtype
) -> tuple[int, int]:
    given = int_ranges.get(tensor.source) or int_ranges.get(tensor.name)
    if given is not None:
        return given
    return (0, 256) if dtype == np.uint8 else DEFAULT_INT_RANGE


def sample_feeds(path: Path, inputs: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """The user's own parity sample: an .npz with one array per input (by the model's
    name of it, or the graph's), cast to the input's dtype."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise UnsupportedModelError(f"could not read --sample {path}: {error}") from error
    feeds = {}
    for tensor in inputs:
        array = arrays.get(tensor.source, arrays.get(tensor.name))
        if array is None:
            raise UnsupportedModelError(
                f"--sample {path} has no array '{tensor.source}' (it holds "
                f"{', '.join(arrays) or 'none'}); give one array per model input"
            )
        feeds[tensor.name] = array.astype(tensor.dtype.as_numpy_dtype)
    return feeds


def output_tolerances(
    outputs: Sequence[Tensor], given: Mapping[str, float], default: float | None
) -> dict[str, float]:
    """Each output's parity tolerance: the one given for it, else ``--tolerance``, else
    1e-4 for floating-point outputs and exact agreement for integers and booleans."""
    known = {t.source for t in outputs} | {t.name for t in outputs}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UnsupportedModelError(
            f"--output-tolerance names {unknown}, which are not outputs; the outputs are "
            f"{', '.join(t.source for t in outputs)}"
        )
    tolerances = {}
    for t in outputs:
        fallback = default if default is not None else FLOAT_TOLERANCE
        if t.dtype.is_floating:
            tolerances[t.name] = given.get(t.source, given.get(t.name, fallback))
        else:
            tolerances[t.name] = given.get(t.source, given.get(t.name, EXACT))
    return tolerances
