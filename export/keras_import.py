"""Bring your own model: publish a trained Keras model (``.keras``/``.h5``) or a
SavedModel folder through the same conversion and parity gate as the zoo.

A model is checked against the kind it is published as before anything slow happens:
a classifier takes one float image (batch, height, width, channels) and returns
(batch, classes) probabilities; a generator takes a float latent (batch, latent_size)
and an integer class, (batch,) or (batch, 1), and returns images (batch, h, w, c) in
[-1, 1]. Whatever the user's inputs are called, the published graph's are named as
the manifest says; labels are cast and reshaped to what the model wants. Sequence
models: ``aimass.export.sequence_kind``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from aimass.export.convert import (
    ServableFunction,
    classifier_function,
    generator_function,
    run_function,
)
from aimass.export.errors import UnsupportedModelError
from aimass.export.labels import default_labels, read_labels
from aimass.export.model_files import ImportedModel, load_model
from aimass.export.opsets import DEFAULT_OPSET
from aimass.export.parity import CLASSIFIER_TOLERANCE, GENERATOR_TOLERANCE, check_parity
from aimass.export.publish import Progress, convert_checked, publish
from aimass.export.quality import sample_latents
from aimass.export.repository import PublishedModel, check_model_name
from aimass.export.tensor_kind import (
    OPEN_SIZES,
    int_range,
    is_batched,
    output_tolerances,
    random_feeds,
    sample_feeds,
    tensor_function,
    tensors_of,
)
from aimass.protocol.manifest import (
    BatchingSpec,
    GeneratorSpec,
    ModelKind,
    Postprocessing,
    Preprocessing,
)

PARITY_SAMPLES = 8
_CHANNELS = (1, 3, 4)
_PROBABILITY_SLACK = 1e-3  # how far from 1 a row of probabilities may sum


@dataclass(frozen=True)
class KerasImportOptions:
    path: Path
    name: str
    kind: ModelKind
    repository: Path
    labels: Path | None = None
    opset: int = DEFAULT_OPSET
    tolerance: float | None = None  # None: the kind's default
    height: int | None = None  # None: from the model's input shape
    width: int | None = None
    channels: int | None = None
    scale: float = 1.0 / 255.0
    offset: Sequence[float] = (0.0,)
    softmax: bool = False  # append a softmax to a classifier that outputs logits
    latent_size: int | None = None
    class_count: int | None = None
    # tensor: the values each integer input's parity samples are drawn from (low
    # inclusive, high exclusive; an embedding's vocabulary), the user's own samples
    # (an .npz of one array per input), and a tolerance per output.
    int_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    sample: Path | None = None
    output_tolerances: Mapping[str, float] = field(default_factory=dict)
    max_batch_size: int = 64
    max_queue_delay_ms: float = 2.0
    seed: int = 0


def publish_user_model(options: KerasImportOptions, progress: Progress) -> PublishedModel:
    check_model_name(options.name)
    model = load_model(options.path)
    progress(
        f"{options.name}: loaded {options.path} ({model.format}), inputs {model.describe_inputs()}"
    )
    if options.kind == ModelKind.tensor:
        return publish_tensor_model(model, options, progress)
    if options.kind == ModelKind.sequence:  # it has options of its own
        raise ValueError("publish sequence models with sequence_kind.publish_sequence_model")
    model.check_one_output(options.kind)
    if options.kind == ModelKind.classify:
        function, feeds, fields = _as_classifier(model, options)
        default_tolerance = CLASSIFIER_TOLERANCE
    else:
        function, feeds, fields = _as_generator(model, options)
        default_tolerance = GENERATOR_TOLERANCE
    tolerance = default_tolerance if options.tolerance is None else options.tolerance
    candidate = convert_checked(
        options.name, options.kind, function, feeds, tolerance, options.opset, progress
    )
    fields |= {
        "batching": BatchingSpec(
            max_batch_size=options.max_batch_size, max_queue_delay_ms=options.max_queue_delay_ms
        ),
        "origin": {"path": str(options.path), "format": model.format},
    }
    return publish(options.repository, candidate, fields)


def publish_tensor_model(
    model: ImportedModel, options: KerasImportOptions, progress: Progress
) -> PublishedModel:
    """Every input and output as it is: served through ``aimass.infer``."""
    inputs = tensors_of([(t.name, t.dtype, t.shape) for t in model.inputs], "input", model.path)
    outputs = tensors_of([(t.name, t.dtype, t.shape) for t in model.outputs], "output", model.path)
    batched = is_batched(inputs, outputs)
    function = tensor_function(inputs, outputs, model.call_all)
    tolerances = output_tolerances(outputs, options.output_tolerances, options.tolerance)
    if options.sample is not None:
        samples = [sample_feeds(options.sample, inputs)]
    else:
        samples = [
            random_feeds(inputs, batched, options.int_ranges, size, options.seed + step)
            for step, size in enumerate(OPEN_SIZES)
        ]
    try:
        candidate = convert_checked(
            options.name,
            ModelKind.tensor,
            function,
            samples[0],
            tolerances,
            options.opset,
            progress,
        )
        for feeds in samples[1:]:  # open dimensions at a second size
            reference = run_function(function, feeds)
            check_parity(options.name, candidate.model_bytes, feeds, reference, tolerances)
    except tf.errors.InvalidArgumentError as error:
        raise UnsupportedModelError(
            f"TensorFlow refused the parity inputs ({error.message.splitlines()[0]}); "
            "integer inputs are drawn from 0..1 unless --int-range NAME=LOW:HIGH says "
            "otherwise, or pass your own --sample FILE.npz"
        ) from error
    ranges = {
        t.name: int_range(t, options.int_ranges, np.dtype(t.dtype.as_numpy_dtype))
        for t in inputs
        if t.dtype.is_integer
    }
    specs = [
        spec.model_copy(update={"value_range": list(ranges[spec.name])})
        if spec.name in ranges and options.sample is None
        else spec
        for spec in candidate.inputs
    ]
    fields: dict[str, Any] = {
        "inputs": specs,
        "batched": batched,
        "output_tolerances": tolerances,
        "quality": {},  # no labelled data comes with a user's model
        "batching": BatchingSpec(
            max_batch_size=options.max_batch_size if batched else 1,
            max_queue_delay_ms=options.max_queue_delay_ms,
        ),
        "origin": {
            "path": str(options.path),
            "format": model.format,
            "names": {t.name: t.source for t in [*inputs, *outputs] if t.name != t.source},
        },
    }
    progress(
        f"{options.name}: inputs {model.describe_inputs()}; outputs "
        f"{model.describe_outputs()}; {'batched' if batched else 'no batch dimension'}"
    )
    return publish(options.repository, candidate, fields)


def _as_classifier(
    model: ImportedModel, options: KerasImportOptions
) -> tuple[ServableFunction, dict[str, np.ndarray], dict[str, Any]]:
    if len(model.inputs) != 1:
        hint = "; did you mean --kind generate?" if len(model.inputs) == 2 else ""
        raise UnsupportedModelError(
            "--kind classify expects a model with one image input (batch, height, width, "
            f"channels); {model.path} has {len(model.inputs)}: {model.describe_inputs()}{hint}"
        )
    (image,) = model.inputs
    if len(image.shape) != 4 or not image.dtype.is_floating:
        raise UnsupportedModelError(
            "--kind classify expects a float image input of rank 4 (batch, height, width, "
            f"channels), NHWC; {model.path} has input {image} (rank {len(image.shape)})"
        )
    height = _dimension("height", image.shape[1], options.height, model.path)
    width = _dimension("width", image.shape[2], options.width, model.path)
    channels = _dimension("channels", image.shape[3], options.channels, model.path)
    if channels not in _CHANNELS:
        raise UnsupportedModelError(
            f"{model.path}'s input {image} ends in {channels}, which is not a channel count; "
            "expected NHWC with 1, 3 or 4 channels last (NCHW models are not supported)"
        )
    if len(model.output_shape) != 2 or model.output_shape[1] is None:
        raise UnsupportedModelError(
            "--kind classify expects one output of shape (batch, classes); "
            f"{model.path}'s output has shape {model.output_shape}"
        )
    class_count = int(model.output_shape[1])
    labels = (
        read_labels(options.labels, class_count) if options.labels else default_labels(class_count)
    )
    offset = list(options.offset)
    if len(offset) not in (1, channels):
        raise UnsupportedModelError(
            f"--offset has {len(offset)} values; expected 1 or {channels} (one per channel)"
        )

    def predict(tensor: tf.Tensor) -> tf.Tensor:
        output = tf.cast(model.call([tf.cast(tensor, image.dtype)]), tf.float32)
        return tf.nn.softmax(output, axis=-1) if options.softmax else output

    function = classifier_function(predict, height, width, channels)
    rng = np.random.default_rng(options.seed)
    pixels = rng.integers(0, 256, (PARITY_SAMPLES, height, width, channels)).astype(np.float32)
    feeds = {
        "image": (pixels * np.float32(options.scale) + np.asarray(offset, np.float32)).astype(
            np.float32
        )
    }
    _check_probabilities(run_function(function, feeds)["probabilities"], model.path)
    fields: dict[str, Any] = {
        "preprocessing": Preprocessing(
            height=height,
            width=width,
            channels=channels,
            layout="NHWC",
            scale=options.scale,
            offset=offset,
        ),
        "labels": labels,
        "quality": {"test_accuracy": None},  # no labelled data comes with a user's model
    }
    return function, feeds, fields


def _as_generator(
    model: ImportedModel, options: KerasImportOptions
) -> tuple[ServableFunction, dict[str, np.ndarray], dict[str, Any]]:
    """A generator of one of three forms: a float latent (batch, latent_size) alone
    (unconditional), with an integer class (batch,) or (batch, 1), or with a float
    condition vector (batch, condition_size). With two float inputs, the latent is the one
    whose name says so (latent, noise, z), else the first."""
    floats = [i for i in model.inputs if i.dtype.is_floating and len(i.shape) == 2]
    named = [i for i in floats if i.name.split(":")[0].lower() in _LATENT_NAMES]
    latent = next(iter(named or floats), None)
    others = [i for i in model.inputs if i is not latent]
    label = next(
        (i for i in others if i.dtype.is_integer and (len(i.shape) == 1 or i.shape[1:] == (1,))),
        None,
    )
    condition = next((i for i in others if i in floats), None)
    if latent is None or len(others) > 1 or (others and label is None and condition is None):
        hint = "; did you mean --kind classify?" if len(model.inputs) == 1 else ""
        raise UnsupportedModelError(
            "--kind generate expects a float latent (batch, latent_size), alone or with an "
            "integer class (batch,) or (batch, 1), or with a float condition vector (batch, "
            f"size); {model.path} has {model.describe_inputs()}{hint}"
        )
    latent_size = _dimension("latent-size", latent.shape[1], options.latent_size, model.path)
    output = model.output_shape
    if len(output) != 4 or None in output[1:] or output[3] not in _CHANNELS:
        raise UnsupportedModelError(
            "--kind generate expects one image output (batch, height, width, channels) with "
            f"static sizes and 1, 3 or 4 channels; {model.path}'s output has shape {output}"
        )
    feeds: dict[str, np.ndarray] = {
        "latent": sample_latents(PARITY_SAMPLES, latent_size, options.seed),
    }
    if label is not None:
        return _class_generator(model, options, latent, label, latent_size, feeds)
    condition_size = 0
    if condition is not None:
        if condition.shape[1] is None:
            raise UnsupportedModelError(
                f"{model.path}'s condition input {condition.name} leaves its size open; "
                "expected a float vector of a fixed size (batch, size)"
            )
        condition_size = int(condition.shape[1])
        rng = np.random.default_rng(options.seed + 1)
        feeds["condition"] = rng.standard_normal((PARITY_SAMPLES, condition_size)).astype(
            np.float32
        )

    def generate(latents: tf.Tensor, given: tf.Tensor | None = None) -> tf.Tensor:
        values = {id(latent): tf.cast(latents, latent.dtype)}
        if condition is not None and given is not None:
            values[id(condition)] = tf.cast(given, condition.dtype)
        return tf.cast(model.call([values[id(item)] for item in model.inputs]), tf.float32)

    function = generator_function(generate, latent_size, condition_size=condition_size)
    fields: dict[str, Any] = {
        "postprocessing": Postprocessing(),
        "generator": GeneratorSpec(
            latent_size=latent_size,
            condition_input="condition" if condition_size else None,
            condition_size=condition_size,
        ),
        "labels": [],
        "quality": {},
    }
    return function, feeds, fields


def _class_generator(
    model: ImportedModel,
    options: KerasImportOptions,
    latent: Any,
    label: Any,
    latent_size: int,
    feeds: dict[str, np.ndarray],
) -> tuple[ServableFunction, dict[str, np.ndarray], dict[str, Any]]:
    if options.class_count is None or options.class_count < 1:
        raise UnsupportedModelError(
            "--kind generate needs --class-count N: how many classes the label input accepts "
            "(0..N-1)"
        )
    labels = (
        read_labels(options.labels, options.class_count)
        if options.labels
        else default_labels(options.class_count)
    )

    def generate(latents: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
        wanted = tf.cast(classes, label.dtype)
        if len(label.shape) == 2:
            wanted = tf.reshape(wanted, (-1, 1))
        latents = tf.cast(latents, latent.dtype)
        return tf.cast(
            model.call([latents if item is latent else wanted for item in model.inputs]), tf.float32
        )

    function = generator_function(generate, latent_size, tf.int64)
    feeds["label"] = np.arange(PARITY_SAMPLES, dtype=np.int64) % options.class_count
    fields: dict[str, Any] = {
        "postprocessing": Postprocessing(),
        "generator": GeneratorSpec(latent_size=latent_size, class_count=options.class_count),
        "labels": labels,
        "quality": {"class_agreement": None},  # no classifier comes with a user's generator
    }
    return function, feeds, fields


# Names that mark a generator's float input as its latent, when it has two.
_LATENT_NAMES = frozenset({"latent", "noise", "z", "latents", "latent_vector"})


def _dimension(flag: str, from_model: int | None, from_flag: int | None, path: Path) -> int:
    """A size the model fixes, else the one its flag gives; the two must agree."""
    if from_model is None:
        if from_flag is None:
            raise UnsupportedModelError(f"{path} does not fix its input's {flag}; pass --{flag}")
        return from_flag
    if from_flag is not None and from_flag != from_model:
        raise UnsupportedModelError(
            f"--{flag} {from_flag} contradicts the model, whose input has {flag} {from_model}; "
            "leave the flag out or make it match"
        )
    return int(from_model)


def _check_probabilities(probabilities: np.ndarray, path: Path) -> None:
    sums = probabilities.sum(axis=1)
    if probabilities.min() < 0 or np.abs(sums - 1).max() > _PROBABILITY_SLACK:
        raise UnsupportedModelError(
            f"{path}'s outputs are not probabilities (rows sum to "
            f"{sums.min():.3g}..{sums.max():.3g}, expected 1): a classifier must end in a "
            "softmax; pass --softmax to add one to a model that outputs logits"
        )
