"""The model zoo: train (or initialise), convert, check and publish each zoo model.

* ``digits``: the AlexNet-style classifier, trained on the train part of the digits
  split; gate: test accuracy >= 0.97 on the held-out part.
* ``digits-gan``: the conditional DCGAN's generator; gate: the digits classifier agrees
  with the requested class for >= 80 % of generated images.
* ``digits-embed``: the same trained classifier with two outputs, its probabilities and
  its penultimate layer (an embedding for similarity search), served by ``aimass.infer``;
  gates: test accuracy >= 0.97, and >= 0.95 of held-out images whose nearest train image
  by embedding (cosine) is of the same digit. Trained once with ``digits`` when both are
  published together.
* ``wine`` and ``diabetes``: see ``aimass.export.tabular_recipes``.
* ``charlm``: see ``aimass.export.sequence_recipes``.
* ``alexnet``: the 2012 network, from weights the user provides or from a seeded
  random initialisation (``trained: false``), for benchmarking.

In quick mode training is cut to a few steps for tests: quality is still measured and
recorded, but the gates are not enforced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass.export import batch_sizes, quality
from aimass.export.data import (
    CLASS_COUNT,
    IMAGE_SIZE,
    DigitsSplit,
    load_digits_split,
    to_model_input,
)
from aimass.export.errors import ExportError
from aimass.export.labels import default_labels, read_labels
from aimass.export.parity import (
    CLASSIFIER_TOLERANCE,
    EMBEDDING_TOLERANCE,
    GENERATOR_TOLERANCE,
)
from aimass.export.repository import Progress, PublishedModel, latest
from aimass.export.sequence_recipes import publish_charlm
from aimass.export.tabular_recipes import publish_diabetes, publish_wine
from aimass.export.zoo import ZOO
from aimass.export.zoo_options import ZooOptions
from aimass.protocol.manifest import (
    BatchingSpec,
    GeneratorSpec,
    ModelKind,
    Postprocessing,
    Preprocessing,
)

if TYPE_CHECKING:
    from aimass.export.training import TrainingReport

MIN_TEST_ACCURACY = 0.97
MIN_CLASS_AGREEMENT = 0.80
MIN_RETRIEVAL_ACCURACY = 0.95
DIGITS_BATCHING = BatchingSpec(max_batch_size=64, max_queue_delay_ms=2.0)
GAN_BATCHING = BatchingSpec(max_batch_size=64, max_queue_delay_ms=2.0)
# Measured here (2 shared cores, ONNX Runtime CPU): 15-17 img/s at batch 1, 26-27 at
# 16, 27-28 at 32 and 64, so 16 is within 5 % of the best. Measuring at every export
# would make the default depend on how busy the exporting machine is, and a GPU
# worker's curve differs anyway: `--measure-batching` measures, worker settings override.
ALEXNET_BATCH_SIZE = 16
# One AlexNet image takes 10-40 ms here: waiting longer than that for company costs more
# latency than the larger batch saves.
ALEXNET_QUEUE_DELAY_MS = 10.0
ALEXNET_PARITY_SAMPLES = 4
_SPLIT_DESCRIPTION = (
    "scikit-learn load_digits, upscaled to 32x32, seeded stratified split (aimass.export.data)"
)


def publish_zoo(
    names: Sequence[str], options: ZooOptions, progress: Progress
) -> list[PublishedModel]:
    """Publish the named zoo models in dependency order (digits before digits-gan)."""
    unknown = sorted(set(names) - set(ZOO))
    if unknown:
        raise ExportError(
            f"unknown zoo model(s) {', '.join(unknown)}: expected some of {', '.join(ZOO)}"
        )
    published: list[PublishedModel] = []
    digits_models = {"digits", "digits-embed", "digits-gan"} & set(names)
    split = load_digits_split() if digits_models else None
    classifier: PublishedModel | None = None
    if split is not None and {"digits", "digits-embed"} & set(names):
        trained = train_digits(options, split, progress)
        if "digits" in names:
            classifier = publish_digits(options, split, trained, progress)
            published.append(classifier)
        if "digits-embed" in names:
            published.append(publish_digits_embed(options, split, trained, progress))
    if split is not None and "digits-gan" in names:
        classifier = classifier or latest(options.repository, "digits")
        if classifier is None:
            raise ExportError(
                "digits-gan needs the digits classifier to measure its quality, and the repository "
                f"{options.repository} has none: publish it first (--only digits,digits-gan)"
            )
        published.append(publish_digits_gan(options, split, classifier, progress))
    if "wine" in names:
        published.append(publish_wine(options, progress))
    if "diabetes" in names:
        published.append(publish_diabetes(options, progress))
    if "charlm" in names:
        published.append(publish_charlm(options, progress))
    if "alexnet" in names:
        published.append(publish_alexnet(options, progress))
    return published


@dataclass(frozen=True)
class TrainedDigits:
    """The digits classifier after training, shared by ``digits`` and ``digits-embed``."""

    model: Any  # keras.Model
    report: TrainingReport


def train_digits(options: ZooOptions, split: DigitsSplit, progress: Progress) -> TrainedDigits:
    from aimass.export.training import (
        CLASSIFIER_QUICK,
        CLASSIFIER_SCHEDULE,
        seed_everything,
        train_classifier,
    )
    from aimass.export.zoo.digits import build_digits_classifier

    seed_everything(options.seed)
    model = build_digits_classifier()
    schedule = CLASSIFIER_QUICK if options.quick else CLASSIFIER_SCHEDULE
    return TrainedDigits(model, train_classifier(model, split, schedule, options.seed, progress))


def publish_digits(
    options: ZooOptions, split: DigitsSplit, trained: TrainedDigits, progress: Progress
) -> PublishedModel:
    from aimass.export.convert import classifier_function
    from aimass.export.publish import convert_checked, publish

    model, report = trained.model, trained.report
    function = classifier_function(
        lambda image: model(image, training=False), IMAGE_SIZE, IMAGE_SIZE, 1
    )
    feeds = {"image": to_model_input(split.test_images)}
    candidate = convert_checked(
        "digits", ModelKind.classify, function, feeds, CLASSIFIER_TOLERANCE, options.opset, progress
    )
    accuracy = quality.test_accuracy(candidate.model_bytes, split.test_images, split.test_labels)
    progress(f"digits: test accuracy {accuracy:.4f} on {len(split.test_labels)} held-out images")
    quality.enforce_gate("digits", "test accuracy", accuracy, MIN_TEST_ACCURACY, options.quick)
    return publish(
        options.repository,
        candidate,
        {
            "preprocessing": Preprocessing(
                height=IMAGE_SIZE, width=IMAGE_SIZE, channels=1, layout="NHWC"
            ),
            "labels": [str(digit) for digit in range(CLASS_COUNT)],
            "batching": DIGITS_BATCHING,
            "quality": {
                "test_accuracy": accuracy,
                "test_samples": len(split.test_labels),
                "gate": {"min_test_accuracy": MIN_TEST_ACCURACY, "enforced": not options.quick},
            },
            "training": {
                **report.as_manifest(options.seed, options.quick),
                "data": _SPLIT_DESCRIPTION,
            },
        },
    )


def publish_digits_embed(
    options: ZooOptions, split: DigitsSplit, trained: TrainedDigits, progress: Progress
) -> PublishedModel:
    import tensorflow as tf

    from aimass.export.convert import IMAGE, PROBABILITIES, named_outputs_function
    from aimass.export.publish import convert_checked, publish
    from aimass.export.zoo.digits import EMBEDDING, with_embedding

    model = with_embedding(trained.model)
    function = named_outputs_function(
        lambda image: model(image, training=False),
        tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32, name=IMAGE),
        [PROBABILITIES, EMBEDDING],
    )
    tolerances = {PROBABILITIES: CLASSIFIER_TOLERANCE, EMBEDDING: EMBEDDING_TOLERANCE}
    feeds = {IMAGE: to_model_input(split.test_images)}
    candidate = convert_checked(
        "digits-embed", ModelKind.tensor, function, feeds, tolerances, options.opset, progress
    )
    test = quality.run_outputs(candidate.model_bytes, feeds)
    train = quality.run_outputs(candidate.model_bytes, {IMAGE: to_model_input(split.train_images)})
    accuracy = float(np.mean(test[PROBABILITIES].argmax(axis=1) == split.test_labels))
    retrieval = quality.retrieval_accuracy(
        test[EMBEDDING], split.test_labels, train[EMBEDDING], split.train_labels
    )
    progress(
        f"digits-embed: test accuracy {accuracy:.4f}, nearest-neighbour retrieval accuracy "
        f"{retrieval:.4f} (held-out images against the train images' embeddings)"
    )
    quality.enforce_gate(
        "digits-embed", "test accuracy", accuracy, MIN_TEST_ACCURACY, options.quick
    )
    quality.enforce_gate(
        "digits-embed", "retrieval accuracy", retrieval, MIN_RETRIEVAL_ACCURACY, options.quick
    )
    return publish(
        options.repository,
        candidate,
        {
            "labels": [str(digit) for digit in range(CLASS_COUNT)],
            "batching": DIGITS_BATCHING,
            "output_tolerances": tolerances,
            "quality": {
                "test_accuracy": accuracy,
                "retrieval_accuracy": retrieval,
                "test_samples": len(split.test_labels),
                "gallery_samples": len(split.train_labels),
                "gate": {
                    "min_test_accuracy": MIN_TEST_ACCURACY,
                    "min_retrieval_accuracy": MIN_RETRIEVAL_ACCURACY,
                    "enforced": not options.quick,
                },
            },
            "training": {
                **trained.report.as_manifest(options.seed, options.quick),
                "data": _SPLIT_DESCRIPTION,
            },
        },
    )


def publish_digits_gan(
    options: ZooOptions, split: DigitsSplit, classifier: PublishedModel, progress: Progress
) -> PublishedModel:
    import tensorflow as tf

    from aimass.export.convert import generator_function
    from aimass.export.publish import convert_checked, publish
    from aimass.export.training import GAN_QUICK, GAN_SCHEDULE, seed_everything, train_gan
    from aimass.export.zoo.gan import LABEL_DTYPE, LATENT_SIZE, build_discriminator, build_generator

    seed_everything(options.seed)
    generator, discriminator = build_generator(), build_discriminator()
    schedule = GAN_QUICK if options.quick else GAN_SCHEDULE
    report = train_gan(generator, discriminator, split, schedule, options.seed, progress)
    function = generator_function(
        lambda latent, label: generator([latent, label], training=False),
        LATENT_SIZE,
        tf.as_dtype(LABEL_DTYPE),
    )
    parity_labels = np.arange(64, dtype=LABEL_DTYPE) % CLASS_COUNT
    feeds = {
        "latent": quality.sample_latents(len(parity_labels), LATENT_SIZE, options.seed),
        "label": parity_labels,
    }
    candidate = convert_checked(
        "digits-gan",
        ModelKind.generate,
        function,
        feeds,
        GENERATOR_TOLERANCE,
        options.opset,
        progress,
    )
    classifier_file = classifier.folder / "model.onnx"
    figures = quality.generator_quality(
        candidate.model_bytes,
        classifier_file,
        split.train_images,
        split.train_labels,
        LATENT_SIZE,
        CLASS_COUNT,
        seed=options.seed,
    )
    progress(
        f"digits-gan: class agreement {figures['class_agreement']:.4f} "
        f"(digits v{classifier.manifest.version}), "
        f"diversity vs real {figures['diversity_ratio_mean']:.2f}"
    )
    quality.enforce_gate(
        "digits-gan",
        "class agreement",
        figures["class_agreement"],
        MIN_CLASS_AGREEMENT,
        options.quick,
    )
    figures["classifier"] = {
        "name": classifier.manifest.name,
        "version": classifier.manifest.version,
    }
    figures["gate"] = {"min_class_agreement": MIN_CLASS_AGREEMENT, "enforced": not options.quick}
    return publish(
        options.repository,
        candidate,
        {
            "postprocessing": Postprocessing(),
            "generator": GeneratorSpec(latent_size=LATENT_SIZE, class_count=CLASS_COUNT),
            "labels": [str(digit) for digit in range(CLASS_COUNT)],
            "batching": GAN_BATCHING,
            "quality": figures,
            "training": {
                **report.as_manifest(options.seed, options.quick),
                "data": _SPLIT_DESCRIPTION,
            },
        },
    )


def publish_alexnet(options: ZooOptions, progress: Progress) -> PublishedModel:
    from aimass.export.convert import classifier_function
    from aimass.export.publish import convert_checked, publish
    from aimass.export.zoo.alexnet import CLASS_COUNT as ALEXNET_CLASSES
    from aimass.export.zoo.alexnet import INPUT_SIZE

    labels = (
        read_labels(options.alexnet_labels, ALEXNET_CLASSES)
        if options.alexnet_labels
        else default_labels(ALEXNET_CLASSES)
    )
    rng = np.random.default_rng(options.seed)
    shape = (ALEXNET_PARITY_SAMPLES, INPUT_SIZE, INPUT_SIZE, 3)
    feeds = {"image": rng.random(shape, dtype=np.float32)}
    model = _alexnet(options, feeds["image"], progress)
    function = classifier_function(
        lambda image: model(image, training=False), INPUT_SIZE, INPUT_SIZE, 3
    )
    candidate = convert_checked(
        "alexnet",
        ModelKind.classify,
        function,
        feeds,
        CLASSIFIER_TOLERANCE,
        options.opset,
        progress,
    )
    fields: dict[str, Any] = {
        "preprocessing": Preprocessing(height=INPUT_SIZE, width=INPUT_SIZE, channels=3),
        "labels": labels,
        "batching": BatchingSpec(
            max_batch_size=ALEXNET_BATCH_SIZE, max_queue_delay_ms=ALEXNET_QUEUE_DELAY_MS
        ),
        # No labelled ImageNet data here: the accuracy is unknown, not zero.
        "quality": {"test_accuracy": None},
        "trained": options.alexnet_weights is not None,
        "training": {
            "seed": options.seed,
            "weights": str(options.alexnet_weights) if options.alexnet_weights else None,
        },
    }
    if options.measure_batching:
        fields |= _measured_batching(candidate.model_bytes, (INPUT_SIZE, INPUT_SIZE, 3), progress)
    return publish(options.repository, candidate, fields)


def _alexnet(options: ZooOptions, parity_images: np.ndarray, progress: Progress) -> Any:
    """AlexNet with the user's weights, or seeded random ones whose logits are spread."""
    from aimass.export.training import seed_everything
    from aimass.export.zoo.alexnet import build_alexnet, spread_random_logits

    seed_everything(options.seed)
    model = build_alexnet()
    if options.alexnet_weights:
        _load_weights(model, options.alexnet_weights)
        progress(f"alexnet: {model.count_params():,} parameters from {options.alexnet_weights}")
    else:
        factor = spread_random_logits(model, parity_images)
        progress(
            f"alexnet: {model.count_params():,} random parameters (seed {options.seed}), "
            f"fc8 scaled by {factor:.3g} so that parity sees distinct probabilities"
        )
    return model


def _measured_batching(
    model_bytes: bytes, sample_shape: tuple[int, ...], progress: Progress
) -> dict[str, Any]:
    """The batching default from ONNX Runtime's throughput on this machine, and the figures."""
    progress("alexnet: measuring ONNX Runtime throughput per batch size")
    results = batch_sizes.measure(model_bytes, sample_shape)
    chosen = batch_sizes.best_batch_size(results)
    progress(
        "alexnet: "
        + ", ".join(f"batch {r.batch_size}: {r.images_per_second:.1f} img/s" for r in results)
        + f"; max_batch_size {chosen}"
    )
    return {
        "batching": BatchingSpec(max_batch_size=chosen, max_queue_delay_ms=ALEXNET_QUEUE_DELAY_MS),
        "benchmark": {
            "images_per_second": {
                str(r.batch_size): round(r.images_per_second, 1) for r in results
            },
            "near_best": batch_sizes.NEAR_BEST,
        },
    }


def _load_weights(model: Any, path: Path) -> None:
    try:
        model.load_weights(path)
    except Exception as error:  # Keras raises ValueError, OSError or h5py errors alike
        raise ExportError(
            f"could not load AlexNet weights from {path}: {error}. Expected a Keras weights file "
            "(.weights.h5) saved from aimass.export.zoo.alexnet.build_alexnet() with the same "
            "class count"
        ) from error
