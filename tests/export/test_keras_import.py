"""``aimass export keras``: a user's own model published through the same gate, and
broken or unsupported models refused with a message that says what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from aimass.export.sessions import cpu_session
from aimass.protocol.manifest import MODEL_FILE, Manifest, ModelKind
from tests.export.conftest import Aimass

pytestmark = pytest.mark.export


def classifier(activation: str = "softmax", input_shape: tuple[int, ...] = (8, 8, 1)) -> Any:
    keras.utils.set_random_seed(0)
    image = keras.Input(input_shape, name="pixels")
    x = keras.layers.Flatten()(image)
    return keras.Model(image, keras.layers.Dense(3, activation=activation)(x))


def generator(label_shape: tuple[int, ...] = (1,), label_dtype: str = "int32") -> Any:
    keras.utils.set_random_seed(0)
    label = keras.Input(label_shape, dtype=label_dtype, name="digit")
    noise = keras.Input((5,), name="noise")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(4, 3)(label))
    x = keras.layers.Dense(36, activation="tanh")(keras.layers.Concatenate()([noise, embedded]))
    return keras.Model([label, noise], keras.layers.Reshape((6, 6, 1))(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("user-models")
    paths = {
        "classifier": folder / "classifier.keras",
        "logits": folder / "logits.keras",
        "flat": folder / "flat.keras",
        "nchw": folder / "nchw.keras",
        "generator": folder / "generator.keras",
    }
    classifier().save(paths["classifier"])
    classifier("linear").save(paths["logits"])
    classifier(input_shape=(64,)).save(paths["flat"])
    classifier(input_shape=(3, 8, 8)).save(paths["nchw"])
    generator().save(paths["generator"])
    paths["saved_model"] = folder / "saved_model"
    classifier("linear").export(str(paths["saved_model"]), verbose=False)
    (folder / "garbage.keras").write_bytes(b"not a zip file")
    paths["garbage"] = folder / "garbage.keras"
    (folder / "labels.txt").write_text("cat\ndog\nbird\n")
    paths["labels"] = folder / "labels.txt"
    (folder / "two-labels.txt").write_text("cat\ndog\n")
    paths["two-labels"] = folder / "two-labels.txt"
    return paths


def test_keras_classifier_is_published(
    aimass: Aimass, models: dict[str, Path], tmp_path: Path
) -> None:
    code = aimass(
        "export",
        "keras",
        str(models["classifier"]),
        "--name",
        "pets",
        "--kind",
        "classify",
        "--labels",
        str(models["labels"]),
        "--repository",
        str(tmp_path),
        "--max-batch-size",
        "8",
    )
    assert code == 0
    manifest = Manifest.read(tmp_path / "pets" / "1")
    assert manifest.kind == ModelKind.classify
    assert [(s.name, s.shape) for s in manifest.inputs] == [("image", [-1, 8, 8, 1])]
    assert [(s.name, s.shape) for s in manifest.outputs] == [("probabilities", [-1, 3])]
    assert manifest.labels == ["cat", "dog", "bird"]
    assert manifest.preprocessing is not None and manifest.preprocessing.channels == 1
    assert manifest.batching.max_batch_size == 8
    assert manifest.parity_max_abs_error is not None and manifest.parity_max_abs_error <= 1e-4
    assert manifest.quality == {"test_accuracy": None}
    session = cpu_session(tmp_path / "pets" / "1" / MODEL_FILE)
    assert session.run(None, {"image": np.zeros((2, 8, 8, 1), np.float32)})[0].shape == (2, 3)


def test_saved_model_with_logits_is_published_with_softmax(
    aimass: Aimass, models: dict[str, Path], tmp_path: Path
) -> None:
    code = aimass(
        "export",
        "keras",
        str(models["saved_model"]),
        "--name",
        "logits",
        "--kind",
        "classify",
        "--softmax",
        "--repository",
        str(tmp_path),
    )
    assert code == 0
    manifest = Manifest.read(tmp_path / "logits" / "1")
    assert manifest.labels == ["class_0", "class_1", "class_2"]
    assert manifest.model_dump()["origin"]["format"] == "saved_model"
    session = cpu_session(tmp_path / "logits" / "1" / MODEL_FILE)
    probabilities = session.run(None, {"image": np.ones((2, 8, 8, 1), np.float32)})[0]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_keras_generator_is_published_with_standard_names(
    aimass: Aimass, models: dict[str, Path], tmp_path: Path
) -> None:
    code = aimass(
        "export",
        "keras",
        str(models["generator"]),
        "--name",
        "shapes",
        "--kind",
        "generate",
        "--class-count",
        "4",
        "--repository",
        str(tmp_path),
    )
    assert code == 0
    manifest = Manifest.read(tmp_path / "shapes" / "1")
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [
        ("latent", "float32", [-1, 5]),
        ("label", "int64", [-1]),
    ]
    assert [(s.name, s.shape) for s in manifest.outputs] == [("image", [-1, 6, 6, 1])]
    assert manifest.generator is not None
    assert (manifest.generator.latent_size, manifest.generator.class_count) == (5, 4)
    session = cpu_session(tmp_path / "shapes" / "1" / MODEL_FILE)
    feeds = {"latent": np.zeros((3, 5), np.float32), "label": np.array([0, 1, 3])}
    assert session.run(None, feeds)[0].shape == (3, 6, 6, 1)


REFUSALS = [
    (
        "missing",
        ["--kind", "classify"],
        "no such file or folder: {missing}; expected a .keras file",
    ),
    ("garbage", ["--kind", "classify"], "could not read {garbage} as a Keras model"),
    ("labels", ["--kind", "classify"], "has the unsupported suffix '.txt'; expected a .keras"),
    ("folder", ["--kind", "classify"], "is a folder without saved_model.pb; expected a SavedModel"),
    (
        "flat",
        ["--kind", "classify"],
        "expects a float image input of rank 4 (batch, height, width, channels), NHWC; "
        "{flat} has input 'pixels' float32 (batch, 64) (rank 2)",
    ),
    (
        "nchw",
        ["--kind", "classify"],
        "ends in 8, which is not a channel count; expected NHWC with 1, 3 or 4 channels last",
    ),
    ("generator", ["--kind", "classify"], "has 2: 'digit' int32 (batch, 1), 'noise' float32"),
    ("generator", ["--kind", "classify"], "did you mean --kind generate?"),
    ("classifier", ["--kind", "generate", "--class-count", "3"], "did you mean --kind classify?"),
    ("generator", ["--kind", "generate"], "--kind generate needs --class-count N"),
    ("logits", ["--kind", "classify"], "are not probabilities (rows sum to"),
    ("logits", ["--kind", "classify"], "pass --softmax to add one"),
    ("classifier", ["--kind", "classify", "--height", "16"], "--height 16 contradicts the model"),
    (
        "classifier",
        ["--kind", "classify", "--labels", "{two-labels}"],
        "has 2 labels, but the model has 3 classes",
    ),
    ("classifier", ["--kind", "classify", "--opset", "7"], "opset 7 is not supported"),
]


@pytest.mark.parametrize(("model", "flags", "expected"), REFUSALS)
def test_unusable_models_are_refused_with_a_clear_message(
    aimass: Aimass,
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    flags: list[str],
    expected: str,
) -> None:
    paths = {
        **{key: str(value) for key, value in models.items()},
        "missing": str(tmp_path / "nope"),
    }
    paths["folder"] = str(tmp_path)
    repository = tmp_path / "repository"

    code = aimass(
        "export",
        "keras",
        paths[model],
        "--name",
        "user",
        "--repository",
        str(repository),
        *[flag.format(**paths) for flag in flags],
    )

    assert code == 1
    assert expected.format(**paths) in capsys.readouterr().err
    assert not (repository / "user").exists()


def test_invalid_model_name_is_refused(
    aimass: Aimass, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = aimass(
        "export",
        "keras",
        str(models["classifier"]),
        "--name",
        "../up",
        "--kind",
        "classify",
        "--repository",
        str(tmp_path),
    )
    assert code == 1
    assert "invalid model name '../up'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
