"""The digits split that training, evaluation and the demo share; and which export
modules stay free of TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aimass.export.data import load_digits_split, to_model_input, upscale

pytestmark = pytest.mark.export


def test_split_is_uint8_32x32_deterministic_and_disjoint() -> None:
    split = load_digits_split()
    again = load_digits_split()
    assert split.train_images.dtype == np.uint8 and split.train_images.shape[1:] == (32, 32)
    assert split.test_images.dtype == np.uint8 and split.test_images.shape[1:] == (32, 32)
    assert len(split.train_labels) + len(split.test_labels) == 1797
    assert len(split.test_labels) == 359
    np.testing.assert_array_equal(split.test_images, again.test_images)
    np.testing.assert_array_equal(split.train_labels, again.train_labels)
    assert np.bincount(split.test_labels, minlength=10).min() >= 35  # stratified
    train = {image.tobytes() for image in split.train_images}
    assert not any(image.tobytes() in train for image in split.test_images)


def test_another_seed_gives_another_split() -> None:
    assert not np.array_equal(load_digits_split(0).test_labels, load_digits_split(1).test_labels)


def test_upscaling_is_pil_bilinear_of_rounded_0_to_255_values() -> None:
    from sklearn.datasets import load_digits

    digit = load_digits().images[0]
    pixels = np.rint(digit * 255 / 16).astype(np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(upscale(digit), expected)


def test_model_input_is_the_png_pixels_over_255() -> None:
    images = load_digits_split().test_images[:3]
    inputs = to_model_input(images)
    assert inputs.dtype == np.float32 and inputs.shape == (3, 32, 32, 1)
    np.testing.assert_array_equal(inputs[..., 0], images.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        (
            "aimass.export.cli",
            ("tensorflow", "numpy", "onnxruntime", "aimass.export.data", "keras"),
        ),
        ("aimass.export.data", ("tensorflow", "keras", "onnxruntime")),
        ("aimass.export.repository", ("tensorflow", "keras", "onnxruntime", "numpy")),
        ("aimass.export.recipes", ("tensorflow", "keras", "tf2onnx")),
    ],
)
def test_light_modules_do_not_import_heavy_ones(module: str, forbidden: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(sorted(set({forbidden!r}) & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_cli_copies_of_constants_match_their_sources() -> None:
    from aimass.export import cli, opsets, recipes

    assert cli.ZOO_MODELS == recipes.ZOO
    assert cli.DEFAULT_OPSET == opsets.DEFAULT_OPSET
