"""From a servable TensorFlow function to a published model version.

``convert_checked`` converts with tf2onnx and runs the parity gate; nothing reaches the
repository unless ONNX Runtime reproduces TensorFlow within the tolerance. ``publish``
then writes the model with its manifest, filling in what every manifest carries (kind,
tensor specs, source versions, parity figures).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aimass.export.convert import ServableFunction, run_function, tensor_specs, to_onnx
from aimass.export.parity import check_parity
from aimass.export.repository import Progress, PublishedModel, publish_version
from aimass.protocol.manifest import ModelKind, Source, TensorSpec


@dataclass(frozen=True)
class Candidate:
    """A converted model that passed the parity gate and awaits its manifest."""

    name: str
    kind: ModelKind
    model_bytes: bytes
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    parity_max_abs_error: float
    parity_tolerance: float


def convert_checked(
    name: str,
    kind: ModelKind,
    function: ServableFunction,
    feeds: Mapping[str, NDArray[np.generic]],
    tolerance: float | Mapping[str, float],
    opset: int,
    progress: Progress,
) -> Candidate:
    """Convert ``function`` and compare ONNX Runtime with TensorFlow on ``feeds``.

    Raises ConversionError or ParityError; the repository is not touched.
    """
    progress(f"{name}: converting to ONNX with tf2onnx (opset {opset})")
    model_bytes = to_onnx(function, opset)
    reference = run_function(function, dict(feeds))
    error = check_parity(name, model_bytes, feeds, reference, tolerance)
    loosest = max(tolerance.values()) if isinstance(tolerance, Mapping) else tolerance
    progress(f"{name}: parity max abs error {error:.3g} (tolerance {loosest:.3g})")
    inputs, outputs = tensor_specs(model_bytes)
    return Candidate(name, kind, model_bytes, inputs, outputs, opset, error, loosest)


def publish(repository: Path, candidate: Candidate, fields: Mapping[str, Any]) -> PublishedModel:
    """Write ``candidate`` as the next version; ``fields`` add to or override the manifest."""
    manifest_fields = {
        "kind": candidate.kind,
        "inputs": candidate.inputs,
        "outputs": candidate.outputs,
        "source": source_versions(candidate.opset),
        "parity_max_abs_error": candidate.parity_max_abs_error,
        "parity_tolerance": candidate.parity_tolerance,
        **fields,
    }
    return publish_version(repository, candidate.name, candidate.model_bytes, manifest_fields)


def source_versions(opset: int) -> Source:
    import keras
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return Source.model_validate(
        {
            "tensorflow": tf.__version__,
            "keras": keras.version(),
            "tf2onnx": tf2onnx.__version__,
            "onnx_opset": opset,
            "onnxruntime": onnxruntime.__version__,  # the runtime that measured parity
        }
    )
