"""The bundled tabular data sets as the zoo's tabular models see them: float32 features.

* wine: 178 wines, 13 chemical measurements each, 3 cultivars (``load_wine``);
* diabetes: 442 patients, 10 baseline variables in their own units (age in years, BMI,
  blood pressure, six blood serum measurements), and a measure of disease progression
  one year later (``load_diabetes(scaled=False)``).

Features travel as the measurements themselves: each model standardises them in its
first layer (its mean and variance learnt from the train part), so a job sends what a
user measured. Splits are seeded and depend only on the seed, not on scikit-learn's
splitting code. This module must not import TensorFlow: the tests of the worker use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DEFAULT_SEED = 0
DEFAULT_TEST_FRACTION = 0.25

WINE_DESCRIPTION = "scikit-learn load_wine, seeded stratified split (aimass.export.tabular)"
DIABETES_DESCRIPTION = (
    "scikit-learn load_diabetes(scaled=False), seeded split (aimass.export.tabular)"
)


@dataclass(frozen=True)
class TabularSplit:
    """Features float32 (n, features); targets int64 class indices or float32 values."""

    train_features: NDArray[np.float32]
    train_targets: NDArray[np.generic]
    test_features: NDArray[np.float32]
    test_targets: NDArray[np.generic]
    feature_names: list[str]
    target_names: list[str]  # a classifier's class names; a regression's one target


def load_wine_split(
    seed: int = DEFAULT_SEED, test_fraction: float = DEFAULT_TEST_FRACTION
) -> TabularSplit:
    """The wine cultivars, split so that each class gives the test part the same share."""
    from sklearn.datasets import load_wine  # scikit-learn is slow to import; only here

    bunch = load_wine()
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: round(len(members) * test_fraction)]] = True
    return _split(bunch.data, labels, test, list(bunch.feature_names), list(bunch.target_names))


def load_diabetes_split(
    seed: int = DEFAULT_SEED, test_fraction: float = DEFAULT_TEST_FRACTION
) -> TabularSplit:
    """Diabetes progression, a seeded random share of the patients held out."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    targets = np.asarray(bunch.target, dtype=np.float32)
    order = np.random.default_rng(seed).permutation(len(targets))
    test = np.zeros(len(targets), dtype=bool)
    test[order[: round(len(targets) * test_fraction)]] = True
    return _split(bunch.data, targets, test, list(bunch.feature_names), ["progression"])


def _split(
    data: NDArray[np.floating],
    targets: NDArray[np.generic],
    test: NDArray[np.bool_],
    feature_names: list[str],
    target_names: list[str],
) -> TabularSplit:
    features = np.asarray(data, dtype=np.float32)
    return TabularSplit(
        train_features=features[~test],
        train_targets=targets[~test],
        test_features=features[test],
        test_targets=targets[test],
        feature_names=feature_names,
        target_names=target_names,
    )
