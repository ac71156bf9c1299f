"""A conditional DCGAN for 32x32 digits (Radford et al. 2015, conditioned on the class).

The generator maps a latent vector and a class index to an image in [-1, 1] (tanh),
up-sampling with strided transposed convolutions, batch normalisation and ReLU. The
discriminator mirrors it with strided convolutions and LeakyReLU(0.2). It takes the
class as a projection (Miyato & Koyama 2018), scoring ``psi(phi(x)) + <embed(y),
phi(x)>`` so that "right image, wrong class" reads as fake, and it also predicts the
class of the image (an auxiliary classifier, Odena et al. 2017): with only 1,400
training images, that direct signal teaches the generator to honour the requested
class in a few hundred steps instead of thousands. Only the generator is published.
"""

from __future__ import annotations

import keras
from keras import layers

from aimass.export.data import CLASS_COUNT, IMAGE_SIZE

LATENT_SIZE = 64
LABEL_DTYPE = "int64"  # the dtype of the published generator's "label" input
_LABEL_EMBEDDING = 32


def build_generator(latent_size: int = LATENT_SIZE, class_count: int = CLASS_COUNT) -> keras.Model:
    """Inputs ``latent`` float32 (batch, latent_size) and ``label`` int64 (batch,);
    output float32 (batch, 32, 32, 1) in [-1, 1]."""
    latent = keras.Input((latent_size,), name="latent")
    label = keras.Input((), dtype=LABEL_DTYPE, name="label")
    embedded = layers.Embedding(class_count, _LABEL_EMBEDDING)(label)
    x = layers.Concatenate()([latent, embedded])
    x = layers.Dense(4 * 4 * 128, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Reshape((4, 4, 128))(x)
    for filters in (64, 32):  # 4 -> 8 -> 16
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    image = layers.Conv2DTranspose(
        1, 4, strides=2, padding="same", activation="tanh", name="image"
    )(x)
    assert image.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 1)
    return keras.Model([latent, label], image, name="digits_generator")


def build_discriminator(class_count: int = CLASS_COUNT) -> keras.Model:
    """Inputs an image in [-1, 1] and its class; outputs a realness logit (batch, 1) and
    class logits (batch, class_count)."""
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    label = keras.Input((), dtype=LABEL_DTYPE, name="label")
    x = image
    for filters in (32, 64, 128):  # 32 -> 16 -> 8 -> 4
        x = layers.Conv2D(filters, 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    # Flatten, not global pooling: averaging away where strokes are lets the generator
    # collapse to one blurry image per class.
    features = layers.Flatten()(x)
    unconditional = layers.Dense(1)(features)
    embedded = layers.Embedding(class_count, features.shape[-1])(label)
    projection = layers.Dot(axes=1)([features, embedded])
    score = layers.Add()([unconditional, projection])
    class_logits = layers.Dense(class_count)(features)
    return keras.Model([image, label], [score, class_logits], name="digits_discriminator")
