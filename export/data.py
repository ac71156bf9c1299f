"""The bundled digits data set as the service sees it: 32x32 grayscale uint8 images.

scikit-learn ships 1,797 8x8 digits with values 0..16. They are scaled to 0..255,
rounded to uint8 and upscaled with PIL's bilinear filter, exactly once, here. Training,
evaluation and the demo all start from these uint8 images, and models see them divided
by 255, so a worker that decodes the same image from a PNG and scales it by 1/255 feeds
the model identical inputs.

This module must not import TensorFlow: the demo and the tests of the worker use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

IMAGE_SIZE = 32
CLASS_COUNT = 10
DEFAULT_SEED = 0
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsSplit:
    """A train/test split; images are uint8 of shape (n, 32, 32), labels int64 of shape (n,)."""

    train_images: NDArray[np.uint8]
    train_labels: NDArray[np.int64]
    test_images: NDArray[np.uint8]
    test_labels: NDArray[np.int64]


def upscale(digit: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.uint8]:
    """One 8x8 digit with values 0..16 as a 32x32 uint8 image."""
    pixels = np.rint(np.asarray(digit, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    resized = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_digits_split(
    seed: int = DEFAULT_SEED, test_fraction: float = DEFAULT_TEST_FRACTION
) -> DigitsSplit:
    """The deterministic split of scikit-learn's digits; the test part is never trained on.

    The split is stratified (each class contributes the same share to the test set) and
    depends only on ``seed``, not on scikit-learn's splitting code.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    from sklearn.datasets import load_digits  # scikit-learn is slow to import; only here

    bunch = load_digits()
    images = np.stack([upscale(digit) for digit in bunch.images])
    labels = np.asarray(bunch.target, dtype=np.int64)

    rng = np.random.default_rng(seed)
    test_indices: list[NDArray[np.intp]] = []
    for digit in range(CLASS_COUNT):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test_indices.append(members[: round(len(members) * test_fraction)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_indices)] = True
    return DigitsSplit(
        train_images=images[~is_test],
        train_labels=labels[~is_test],
        test_images=images[is_test],
        test_labels=labels[is_test],
    )


def to_model_input(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """uint8 images (n, 32, 32) as the classifier's input: float32 (n, 32, 32, 1) in [0, 1]."""
    return (images.astype(np.float32) / np.float32(255.0))[..., np.newaxis]
