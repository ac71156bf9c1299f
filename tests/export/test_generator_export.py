"""``aimass export keras --kind generate`` for generators of no classes: one with only a
latent input, one conditioned on a float vector. Each is published through the parity
gate, and its ONNX graph answers as Keras does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from aimass.export.sessions import cpu_session
from aimass.protocol.manifest import MODEL_FILE, Manifest
from tests.export.conftest import Aimass

pytestmark = pytest.mark.export


def unconditional() -> Any:
    keras.utils.set_random_seed(0)
    noise = keras.Input((5,), name="z")
    x = keras.layers.Dense(36, activation="tanh")(noise)
    return keras.Model(noise, keras.layers.Reshape((6, 6, 1))(x))


def vector_conditioned() -> Any:
    keras.utils.set_random_seed(0)
    style = keras.Input((3,), name="style")  # first, and not named as a latent
    noise = keras.Input((5,), name="noise")
    x = keras.layers.Dense(36, activation="tanh")(keras.layers.Concatenate()([noise, style]))
    return keras.Model([style, noise], keras.layers.Reshape((6, 6, 1))(x))


def publish(aimass: Aimass, model: Any, name: str, folder: Path) -> Manifest:
    path = folder / f"{name}.keras"
    model.save(path)
    code = aimass(
        "export",
        "keras",
        str(path),
        "--name",
        name,
        "--kind",
        "generate",
        "--repository",
        str(folder / "models"),
    )
    assert code == 0
    return Manifest.read(folder / "models" / name / "1")


def test_an_unconditional_generator_is_published_with_its_latent_alone(
    aimass: Aimass, tmp_path: Path
) -> None:
    model = unconditional()
    manifest = publish(aimass, model, "free", tmp_path)
    assert [(s.name, s.shape) for s in manifest.inputs] == [("latent", [-1, 5])]
    spec = manifest.generator
    assert spec is not None and not spec.class_conditioned and spec.condition_input is None
    latents = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    session = cpu_session(tmp_path / "models" / "free" / "1" / MODEL_FILE)
    (images,) = session.run(None, {"latent": latents})
    np.testing.assert_allclose(images, model.predict(latents, verbose=0), atol=1e-5)


def test_a_vector_conditioned_generator_is_published_with_its_condition(
    aimass: Aimass, tmp_path: Path
) -> None:
    model = vector_conditioned()
    manifest = publish(aimass, model, "styled", tmp_path)
    assert [(s.name, s.shape) for s in manifest.inputs] == [
        ("latent", [-1, 5]),
        ("condition", [-1, 3]),
    ]
    spec = manifest.generator
    assert spec is not None and (spec.condition_input, spec.condition_size) == ("condition", 3)
    assert not spec.class_conditioned
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((4, 5)).astype(np.float32)
    styles = rng.standard_normal((4, 3)).astype(np.float32)
    session = cpu_session(tmp_path / "models" / "styled" / "1" / MODEL_FILE)
    (images,) = session.run(None, {"latent": latents, "condition": styles})
    np.testing.assert_allclose(images, model.predict([styles, latents], verbose=0), atol=1e-5)
