"""What ``aimass export zoo`` was asked for, handed to every zoo recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aimass.export.opsets import DEFAULT_OPSET


@dataclass(frozen=True)
class ZooOptions:
    repository: Path
    seed: int = 0
    quick: bool = False
    opset: int = DEFAULT_OPSET
    alexnet_weights: Path | None = None  # Keras weights (.weights.h5) for build_alexnet()
    alexnet_labels: Path | None = None  # one label per line
    measure_batching: bool = False  # measure AlexNet's best batch size with ONNX Runtime
