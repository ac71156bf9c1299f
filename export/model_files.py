"""A user's model file read for export: a ``.keras``/``.h5`` file or a SavedModel folder,
as one callable with its inputs and outputs listed (names, dtypes, shapes), whatever
kind it is then published as."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from aimass.export.errors import UnsupportedModelError
from aimass.protocol.manifest import ModelKind


@dataclass(frozen=True)
class ModelTensor:
    name: str
    dtype: tf.DType
    shape: tuple[int | None, ...]

    def __str__(self) -> str:
        dims = ", ".join(
            "batch" if index == 0 else str(dim) for index, dim in enumerate(self.shape)
        )
        return f"'{self.name}' {self.dtype.name} ({dims})"


@dataclass(frozen=True)
class ImportedModel:
    """A model of either format, called with its inputs in ``inputs`` order; ``call_all``
    returns its outputs in ``outputs`` order."""

    path: Path
    format: str  # "keras" or "saved_model"
    inputs: list[ModelTensor]
    outputs: list[ModelTensor]
    call_all: Callable[[list[tf.Tensor]], list[tf.Tensor]]
    keep_alive: Any = None  # a SavedModel's signature only holds weak references to its variables

    def describe_inputs(self) -> str:
        return ", ".join(str(item) for item in self.inputs) or "none"

    def describe_outputs(self) -> str:
        return ", ".join(str(item) for item in self.outputs) or "none"

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """The one output's shape, for the kinds that take one output."""
        return self.outputs[0].shape

    def call(self, tensors: list[tf.Tensor]) -> tf.Tensor:
        return self.call_all(tensors)[0]

    def check_one_output(self, kind: ModelKind) -> None:
        if len(self.outputs) != 1:
            raise UnsupportedModelError(
                f"--kind {kind} expects a model with one output; {self.path} has "
                f"{len(self.outputs)}: {self.describe_outputs()}. Publish it with --kind "
                "tensor to serve every output (aimass.infer jobs)"
            )


def load_model(path: Path) -> ImportedModel:
    """Read a ``.keras``/``.h5`` file or a SavedModel folder; refuse anything else."""
    if not path.exists():
        raise UnsupportedModelError(
            f"no such file or folder: {path}; expected a .keras file or a SavedModel folder"
        )
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise UnsupportedModelError(
                f"{path} is a folder without saved_model.pb; expected a SavedModel folder "
                "(tf.saved_model.save or model.export) or a .keras file"
            )
        return _load_saved_model(path)
    if path.suffix not in (".keras", ".h5"):
        raise UnsupportedModelError(
            f"{path} has the unsupported suffix '{path.suffix}'; expected a .keras (or legacy .h5) "
            "file saved with model.save(), or a SavedModel folder"
        )
    return _load_keras(path)


def _load_keras(path: Path) -> ImportedModel:
    import keras

    import aimass.export.zoo.alexnet  # noqa: F401 - registers its LRN layer for models built from it

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises ValueError, OSError, zipfile and h5py errors alike
        raise UnsupportedModelError(
            f"could not read {path} as a Keras model: {error}. Expected a file written by "
            "model.save('model.keras') with Keras 3"
        ) from error
    try:
        keras_inputs, keras_outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as error:
        raise UnsupportedModelError(
            f"{path} holds a model whose inputs are unknown ({error}); expected a functional or "
            "Sequential model built with keras.Input, or a subclassed one called once before saving"
        ) from error
    inputs = [
        ModelTensor(str(item.name), tf.as_dtype(item.dtype), tuple(item.shape))
        for item in keras_inputs
    ]
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(keras_outputs):
        names = [f"output_{index}" for index in range(len(keras_outputs))]
    outputs = [
        ModelTensor(str(name), tf.as_dtype(item.dtype), tuple(item.shape))
        for name, item in zip(names, keras_outputs, strict=True)
    ]

    def call_all(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        result = model(tensors[0] if len(tensors) == 1 else tensors, training=False)
        if isinstance(result, dict):
            return [result[name] for name in names]
        return list(result) if isinstance(result, list | tuple) else [result]

    return ImportedModel(path, "keras", inputs, outputs, call_all)


def _load_saved_model(path: Path) -> ImportedModel:
    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except KeyError as error:
        raise UnsupportedModelError(
            f"{path} has no 'serving_default' signature; expected a SavedModel written by "
            "model.export() or tf.saved_model.save() with a serving signature"
        ) from error
    except Exception as error:  # TensorFlow raises many types for an unreadable folder
        raise UnsupportedModelError(f"could not read {path} as a SavedModel: {error}") from error
    specs: dict[str, tf.TensorSpec] = signature.structured_input_signature[1]
    output_specs: dict[str, tf.TensorSpec] = signature.structured_outputs
    names = sorted(specs)
    inputs = [
        ModelTensor(name, specs[name].dtype, tuple(specs[name].shape.as_list())) for name in names
    ]
    output_names = sorted(output_specs)
    outputs = [
        ModelTensor(name, output_specs[name].dtype, tuple(output_specs[name].shape.as_list()))
        for name in output_names
    ]

    def call_all(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        result = signature(**dict(zip(names, tensors, strict=True)))
        return [result[name] for name in output_names]

    return ImportedModel(path, "saved_model", inputs, outputs, call_all, keep_alive=loaded)
