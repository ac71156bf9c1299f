"""The zoo beyond images: the wine classifier and the diabetes regression trained in full
(seconds: a few hundred rows), and digits-embed trained for a few steps; each published
with its quality figures, which the tests measure again on the ONNX files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aimass.export.data import load_digits_split, to_model_input
from aimass.export.quality import regression_quality, retrieval_accuracy
from aimass.export.quality import run_outputs as run_quality_outputs
from aimass.export.sessions import cpu_session
from aimass.export.tabular import load_diabetes_split, load_wine_split
from aimass.protocol.manifest import MODEL_FILE, Manifest, ModelKind
from tests.export.conftest import Aimass

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def repository(aimass: Aimass, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    assert aimass("export", "zoo", "--only", "wine,diabetes", "--repository", str(folder)) == 0
    code = aimass("export", "zoo", "--only", "digits-embed", "--quick", "--repository", str(folder))
    assert code == 0
    return folder


def manifest(repository: Path, name: str) -> Manifest:
    return Manifest.read(repository / name / "1")


def test_wine_is_a_classifier_of_feature_vectors(repository: Path) -> None:
    wine = manifest(repository, "wine")
    assert wine.kind == ModelKind.classify
    assert [(s.name, s.dtype, s.shape) for s in wine.inputs] == [("features", "float32", [-1, 13])]
    assert [(s.name, s.shape) for s in wine.outputs] == [("probabilities", [-1, 3])]
    assert wine.preprocessing is None  # not an image: features go in as they are
    assert wine.labels == ["class_0", "class_1", "class_2"]
    assert wine.model_dump()["features"][:2] == ["alcohol", "malic_acid"]
    # Trained in full, so the gate held.
    assert wine.quality["gate"] == {"min_test_accuracy": 0.9, "enforced": True}
    split = load_wine_split()
    session = cpu_session(repository / "wine" / "1" / MODEL_FILE)
    # Raw measurements in: the model standardises them itself.
    scores = session.run(None, {"features": split.test_features})[0]
    accuracy = float(np.mean(scores.argmax(axis=1) == split.test_targets))
    assert accuracy == pytest.approx(wine.quality["test_accuracy"])
    assert accuracy >= 0.9
    assert wine.quality["test_samples"] == len(split.test_targets) == 45


def test_diabetes_is_a_regression_with_r2_and_mae(repository: Path) -> None:
    diabetes = manifest(repository, "diabetes")
    assert diabetes.kind == ModelKind.tensor
    assert [(s.name, s.shape) for s in diabetes.inputs] == [("features", [-1, 10])]
    assert [(s.name, s.dtype, s.shape) for s in diabetes.outputs] == [
        ("progression", "float32", [-1, 1])
    ]
    split = load_diabetes_split()
    session = cpu_session(repository / "diabetes" / "1" / MODEL_FILE)
    predicted = session.run(None, {"features": split.test_features})[0]
    figures = regression_quality(predicted, split.test_targets)
    for key in ("r2", "mae", "rmse"):
        assert figures[key] == pytest.approx(diabetes.quality[key], rel=1e-5)
    assert figures["r2"] >= 0.4 and figures["mae"] < 50  # the target's spread is 77
    assert diabetes.quality["gate"] == {"min_r2": 0.4, "enforced": True}
    # Predictions in the target's own unit (25 to 346), not standardised.
    assert 50 < float(predicted.mean()) < 250


def test_digits_embed_returns_scores_and_an_embedding(repository: Path) -> None:
    embed = manifest(repository, "digits-embed")
    assert embed.kind == ModelKind.tensor and embed.batched
    assert sorted((s.name, s.shape[-1]) for s in embed.outputs) == [
        ("embedding", 128),
        ("probabilities", 10),
    ]
    assert embed.output_tolerances == {"probabilities": 1e-4, "embedding": 1e-3}
    assert {"test_accuracy", "retrieval_accuracy"} <= set(embed.quality)
    split = load_digits_split()
    model = repository / "digits-embed" / "1" / MODEL_FILE
    test = run_quality_outputs(model, {"image": to_model_input(split.test_images)})
    train = run_quality_outputs(model, {"image": to_model_input(split.train_images)})
    retrieval = retrieval_accuracy(
        test["embedding"], split.test_labels, train["embedding"], split.train_labels
    )
    assert retrieval == pytest.approx(embed.quality["retrieval_accuracy"])
    assert (test["embedding"] >= 0).all()  # the penultimate layer's ReLU
    np.testing.assert_allclose(test["probabilities"].sum(axis=1), 1.0, atol=1e-5)


def test_models_shows_the_quality_figures(
    aimass: Aimass, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aimass("models", "--repository", str(repository)) == 0
    lines = capsys.readouterr().out.splitlines()
    diabetes = next(line for line in lines if line.startswith("diabetes "))
    assert "r2=0." in diabetes and "mae=" in diabetes
    embed = next(line for line in lines if line.startswith("digits-embed "))
    assert "test_accuracy=" in embed and "retrieval_accuracy=" in embed
    assert aimass("models", "--repository", str(repository), "--json") == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert by_name["wine"]["inputs"] == [
        {"name": "features", "datatype": "FP32", "shape": [-1, 13]}
    ]
    assert by_name["diabetes"]["quality"]["mae"] > 0


def test_regression_quality_of_a_perfect_and_a_mean_prediction() -> None:
    targets = np.array([1.0, 2.0, 3.0, 6.0])
    assert regression_quality(targets, targets) == {"r2": 1.0, "mae": 0.0, "rmse": 0.0}
    mean = regression_quality(np.full(4, targets.mean()), targets)
    assert mean["r2"] == pytest.approx(0.0) and mean["mae"] == pytest.approx(1.5)


def test_retrieval_accuracy_finds_the_nearest_by_angle() -> None:
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1])
    # Length does not count, direction does.
    query = np.array([[10.0, 1.0], [0.1, 0.2]])
    assert retrieval_accuracy(query, np.array([0, 1]), gallery, labels) == 1.0
    assert retrieval_accuracy(query, np.array([1, 1]), gallery, labels) == 0.5
