"""AlexNet as in Krizhevsky, Sutskever & Hinton (2012), on one tower instead of two GPUs.

227x227x3 input (the paper says 224, but its 11x11 stride-4 first layer only yields
55x55 from 227); five convolutions with local response normalisation after the first
two and overlapping 3x3/2 max-pooling after the first, second and fifth; two
4096-unit layers with dropout 0.5; a 1000-way softmax. 62.4 M parameters.

Weights start from Keras's default Glorot initialisation rather than the paper's
N(0, 0.01): with eight layers of 0.01-scaled weights, the untrained network's outputs
are uniform to float32 precision, which would make the parity check meaningless.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import layers

INPUT_SIZE = 227
CLASS_COUNT = 1000


@keras.saving.register_keras_serializable(package="aimass")
class LocalResponseNormalization(layers.Layer):
    """The paper's LRN (section 3.3): k=2, n=5, alpha=1e-4, beta=0.75, across channels.

    TensorFlow's ``depth_radius`` is (n - 1) / 2, and its alpha multiplies the plain sum
    of squares as the paper's does; tf2onnx maps it to ONNX's LRN.
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.depth_radius = depth_radius
        self.bias = bias
        self.alpha = alpha
        self.beta = beta

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.local_response_normalization(
            inputs, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


def build_alexnet(class_count: int = CLASS_COUNT) -> keras.Model:
    """Input float32 (batch, 227, 227, 3) RGB scaled to [0, 1]; output softmax over classes."""
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = layers.Conv2D(96, 11, strides=4, activation="relu", name="conv1")(image)  # 55x55
    x = LocalResponseNormalization(name="norm1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # 27x27
    x = layers.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = LocalResponseNormalization(name="norm2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)  # 13x13
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)  # 6x6
    x = layers.Flatten()(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    x = layers.Dropout(0.5)(x)
    probabilities = layers.Dense(class_count, activation="softmax", name="fc8")(x)
    return keras.Model(image, probabilities, name="alexnet")


RANDOM_LOGIT_SPREAD = 4.0


def spread_random_logits(model: keras.Model, images: tf.Tensor) -> float:
    """Scale a randomly initialised AlexNet's last layer so its logits on ``images``
    spread like a trained network's (standard deviation 4 across classes); returns the
    factor.

    Untrained, its softmax is uniform to within 1e-4 relative: a conversion that got
    a layer wrong would still pass a 1e-4 parity check on the probabilities. Scaling
    ``fc8`` (kernel and bias) scales the logits alone, so the parity check sees
    distinct probabilities again.
    """
    probabilities = model(images, training=False)
    spread = float(tf.reduce_mean(tf.math.reduce_std(tf.math.log(probabilities), axis=1)))
    factor = RANDOM_LOGIT_SPREAD / spread
    last = model.get_layer("fc8")
    last.kernel.assign(last.kernel * factor)
    last.bias.assign(last.bias * factor)
    return factor
