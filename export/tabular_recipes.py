"""The zoo's tabular models: trained on a bundled data set, converted, checked, published.

* ``wine``: a classifier of 13 chemical measurements into 3 cultivars, served by
  ``aimass.classify`` (a feature vector in, top-k labels out); gate: test accuracy
  >= 0.9 on the held-out quarter.
* ``diabetes``: a regression of disease progression from 10 baseline variables, served
  by ``aimass.infer`` (``features`` in, ``progression`` out); gate: test R² >= 0.4 (a
  linear model reaches about 0.45 on this data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from aimass.export import quality
from aimass.export.parity import CLASSIFIER_TOLERANCE, REGRESSION_TOLERANCE
from aimass.export.repository import Progress, PublishedModel
from aimass.export.tabular import (
    DIABETES_DESCRIPTION,
    WINE_DESCRIPTION,
    TabularSplit,
    load_diabetes_split,
    load_wine_split,
)
from aimass.export.zoo_options import ZooOptions
from aimass.protocol.manifest import BatchingSpec, ModelKind

if TYPE_CHECKING:
    from aimass.export.publish import Candidate
    from aimass.export.training import TrainingReport

MIN_WINE_ACCURACY = 0.9
MIN_DIABETES_R2 = 0.4
# A row of features takes microseconds: a batch is as cheap as one, so wait little.
TABULAR_BATCHING = BatchingSpec(max_batch_size=256, max_queue_delay_ms=1.0)
PROGRESSION = "progression"


@dataclass(frozen=True)
class TrainedTabular:
    """A tabular model converted and checked, with its output on the held-out rows."""

    candidate: Candidate
    report: TrainingReport
    test_output: NDArray[np.float32]


def publish_wine(options: ZooOptions, progress: Progress) -> PublishedModel:
    """The wine classifier, as a classify model without image preprocessing."""
    from aimass.export.convert import PROBABILITIES
    from aimass.export.publish import publish
    from aimass.export.zoo.tabular import build_tabular_classifier

    split = load_wine_split(options.seed)
    trained = _train_and_convert(
        "wine",
        ModelKind.classify,
        split,
        lambda: build_tabular_classifier(split.train_features, len(split.target_names)),
        ("sparse_categorical_crossentropy", PROBABILITIES, CLASSIFIER_TOLERANCE),
        options,
        progress,
    )
    accuracy = float(np.mean(trained.test_output.argmax(axis=1) == split.test_targets))
    progress(f"wine: test accuracy {accuracy:.4f} on {len(split.test_targets)} held-out wines")
    quality.enforce_gate("wine", "test accuracy", accuracy, MIN_WINE_ACCURACY, options.quick)
    return publish(
        options.repository,
        trained.candidate,
        {
            "labels": split.target_names,
            "batching": TABULAR_BATCHING,
            "features": split.feature_names,
            "quality": {
                "test_accuracy": accuracy,
                "test_samples": len(split.test_targets),
                "gate": {"min_test_accuracy": MIN_WINE_ACCURACY, "enforced": not options.quick},
            },
            "training": {
                **trained.report.as_manifest(options.seed, options.quick),
                "data": WINE_DESCRIPTION,
            },
        },
    )


def publish_diabetes(options: ZooOptions, progress: Progress) -> PublishedModel:
    """The diabetes regression, as a tensor model (``aimass.infer``)."""
    from aimass.export.publish import publish
    from aimass.export.zoo.tabular import build_regressor

    split = load_diabetes_split(options.seed)
    trained = _train_and_convert(
        "diabetes",
        ModelKind.tensor,
        split,
        lambda: build_regressor(split.train_features, split.train_targets.astype(np.float32)),
        ("mse", PROGRESSION, REGRESSION_TOLERANCE),
        options,
        progress,
    )
    figures: dict[str, Any] = quality.regression_quality(
        trained.test_output, split.test_targets.astype(np.float32)
    )
    progress(
        f"diabetes: test R² {figures['r2']:.4f}, MAE {figures['mae']:.2f}, RMSE "
        f"{figures['rmse']:.2f} on {len(split.test_targets)} held-out patients"
    )
    quality.enforce_gate("diabetes", "test R²", figures["r2"], MIN_DIABETES_R2, options.quick)
    figures |= {
        "test_samples": len(split.test_targets),
        "gate": {"min_r2": MIN_DIABETES_R2, "enforced": not options.quick},
    }
    return publish(
        options.repository,
        trained.candidate,
        {
            "batching": TABULAR_BATCHING,
            "output_tolerances": {PROGRESSION: REGRESSION_TOLERANCE},
            "features": split.feature_names,
            "quality": figures,
            "training": {
                **trained.report.as_manifest(options.seed, options.quick),
                "data": DIABETES_DESCRIPTION,
            },
        },
    )


def _train_and_convert(
    name: str,
    kind: ModelKind,
    split: TabularSplit,
    build: Callable[[], Any],
    target: tuple[str, str, float],  # the loss, the output's name, its parity tolerance
    options: ZooOptions,
    progress: Progress,
) -> TrainedTabular:
    """Build (seeded), train, convert with the parity gate on the held-out rows, and run
    the ONNX file on them as a worker would."""
    import tensorflow as tf

    from aimass.export.convert import named_outputs_function
    from aimass.export.publish import convert_checked
    from aimass.export.training import (
        TABULAR_QUICK,
        TABULAR_SCHEDULE,
        seed_everything,
        train_tabular,
    )
    from aimass.export.zoo.tabular import FEATURES

    loss, output, tolerance = target
    seed_everything(options.seed)
    model = build()
    schedule = TABULAR_QUICK if options.quick else TABULAR_SCHEDULE
    report = train_tabular(model, split, schedule, loss, options.seed, progress)
    function = named_outputs_function(
        lambda features: [model(features, training=False)],
        tf.TensorSpec((None, split.train_features.shape[1]), tf.float32, name=FEATURES),
        [output],
    )
    feeds = {FEATURES: split.test_features}
    candidate = convert_checked(name, kind, function, feeds, tolerance, options.opset, progress)
    outputs = quality.run_outputs(candidate.model_bytes, feeds)
    return TrainedTabular(candidate, report, outputs[output])
