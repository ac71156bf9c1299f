"""A compact AlexNet-style classifier for 32x32 grayscale digits.

AlexNet's shape at a fraction of its size: a strided large first convolution,
overlapping 3x3/2 max-pooling, a stack of 3x3 convolutions, then fully connected layers
with dropout. Batch normalisation and one residual block make it train in a few
epochs on 1,400 images; L2 regularisation keeps it from memorising them.
"""

from __future__ import annotations

import keras
from keras import layers, regularizers

from aimass.export.data import CLASS_COUNT, IMAGE_SIZE

L2 = 1e-4
EMBEDDING = "embedding"  # the penultimate layer: what digits-embed also returns
EMBEDDING_SIZE = 128


def _conv(filters: int, kernel: int, stride: int = 1) -> layers.Conv2D:
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,  # batch normalisation supplies the bias
        kernel_regularizer=regularizers.L2(L2),
    )


def _conv_bn_relu(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int = 1
) -> keras.KerasTensor:
    x = _conv(filters, kernel, stride)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def _residual_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    shortcut = layers.BatchNormalization(momentum=0.9)(
        _conv(filters, 1)(x)
    )  # match the channel count
    x = _conv_bn_relu(x, filters, 3)
    x = layers.BatchNormalization(momentum=0.9)(_conv(filters, 3)(x))
    return layers.ReLU()(layers.Add()([x, shortcut]))


def build_digits_classifier() -> keras.Model:
    """Input float32 (batch, 32, 32, 1) in [0, 1]; output softmax over the 10 digits."""
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = _conv_bn_relu(image, 32, 5, stride=2)  # 16x16, like AlexNet's strided 11x11
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)  # 8x8, overlapping pooling
    x = _residual_block(x, 64)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)  # 4x4
    x = _conv_bn_relu(x, 128, 3)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)  # 2x2
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(
        EMBEDDING_SIZE, activation="relu", kernel_regularizer=regularizers.L2(L2), name=EMBEDDING
    )(x)
    x = layers.Dropout(0.5)(x)
    probabilities = layers.Dense(CLASS_COUNT, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="digits")


def with_embedding(classifier: keras.Model) -> keras.Model:
    """The same trained network with two outputs: the class probabilities and the
    penultimate layer's activations (batch, 128), an embedding for similarity search."""
    embedding = classifier.get_layer(EMBEDDING).output
    return keras.Model(
        classifier.inputs, [classifier.outputs[0], embedding], name="digits_embedding"
    )
