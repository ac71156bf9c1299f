"""Small dense networks for the bundled tabular data sets.

Each takes the measurements as they are: its first layer standardises them with the
train part's mean and standard deviation, so that the exported graph holds the scaling and a job
sends what was measured. The regression also learns a standardised target and scales
it back in its last layer, so its output is in the data set's own unit.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, regularizers
from numpy.typing import NDArray

CLASSIFIER_L2 = 1e-3
# Stronger for the regression: 332 noisy patients overfit a 16-unit layer within 100 epochs
# (test R² 0.36 against 0.49 here).
REGRESSOR_L2 = 1e-2
FEATURES = "features"


def standardize(train_features: NDArray[np.float32]) -> layers.Rescaling:
    """``(x - mean) / std`` per feature, with the train part's mean and standard deviation
    held as constants. (Keras's ``Normalization`` keeps them as captured tensors, which
    tf2onnx turns into extra graph inputs.)"""
    mean = train_features.mean(axis=0)
    std = np.maximum(train_features.std(axis=0), 1e-6)
    return layers.Rescaling(
        (1.0 / std).astype(np.float32), offset=(-mean / std).astype(np.float32), name="standardize"
    )


def build_tabular_classifier(
    train_features: NDArray[np.float32], class_count: int, hidden: int = 16
) -> keras.Model:
    """Input float32 (batch, features); output softmax over the classes."""
    features = keras.Input((train_features.shape[1],), name=FEATURES)
    x = standardize(train_features)(features)
    x = layers.Dense(hidden, activation="relu", kernel_regularizer=regularizers.L2(CLASSIFIER_L2))(
        x
    )
    x = layers.Dropout(0.2)(x)
    probabilities = layers.Dense(class_count, activation="softmax", name="probabilities")(x)
    return keras.Model(features, probabilities, name="tabular_classifier")


def build_regressor(
    train_features: NDArray[np.float32], train_targets: NDArray[np.float32], hidden: int = 8
) -> keras.Model:
    """Input float32 (batch, features); output float32 (batch, 1) in the target's unit."""
    features = keras.Input((train_features.shape[1],), name=FEATURES)
    x = standardize(train_features)(features)
    x = layers.Dense(hidden, activation="relu", kernel_regularizer=regularizers.L2(REGRESSOR_L2))(x)
    standardized = layers.Dense(1, name="standardized")(x)
    mean, std = float(np.mean(train_targets)), float(np.std(train_targets))
    value = layers.Rescaling(std, offset=mean, name="value")(standardized)
    return keras.Model(features, value, name="regressor")
