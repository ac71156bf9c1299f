"""The quick zoo end to end through the command handlers: digits and digits-gan trained
for a few steps, converted, checked and published into a temporary repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aimass.export.data import load_digits_split, to_model_input
from aimass.export.repository import sha256_of
from aimass.export.sessions import cpu_session
from aimass.protocol.manifest import MODEL_FILE, Manifest, ModelKind, published_versions
from tests.export.conftest import Aimass

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def repository(aimass: Aimass, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    code = aimass(
        "export", "zoo", "--only", "digits,digits-gan", "--quick", "--repository", str(folder)
    )
    assert code == 0
    return folder


def manifest(repository: Path, name: str, version: int = 1) -> Manifest:
    return Manifest.read(repository / name / str(version))


def test_manifests_describe_the_digits_classifier(repository: Path) -> None:
    digits = manifest(repository, "digits")
    assert (digits.name, digits.version, digits.kind) == ("digits", 1, ModelKind.classify)
    assert [(s.name, s.dtype, s.shape) for s in digits.inputs] == [
        ("image", "float32", [-1, 32, 32, 1])
    ]
    assert [(s.name, s.dtype, s.shape) for s in digits.outputs] == [
        ("probabilities", "float32", [-1, 10])
    ]
    assert digits.preprocessing is not None
    assert digits.preprocessing.model_dump() == {
        "height": 32,
        "width": 32,
        "channels": 1,
        "layout": "NHWC",
        "scale": 1 / 255,
        "offset": [0.0],
    }
    assert digits.labels == [str(digit) for digit in range(10)]
    assert (digits.batching.max_batch_size, digits.batching.max_queue_delay_ms) == (64, 2.0)
    assert digits.sha256 == sha256_of(repository / "digits" / "1" / MODEL_FILE)
    assert digits.parity_tolerance == 1e-4
    assert digits.parity_max_abs_error is not None and digits.parity_max_abs_error <= 1e-4
    assert 0.0 <= digits.quality["test_accuracy"] <= 1.0
    assert digits.quality["gate"] == {"min_test_accuracy": 0.97, "enforced": False}
    assert digits.source.tf2onnx and digits.source.tensorflow and digits.source.keras
    assert digits.source.onnx_opset == 17
    assert digits.trained and digits.created_at
    assert digits.model_dump()["training"]["quick"] is True


def test_manifests_describe_the_generator(repository: Path) -> None:
    gan = manifest(repository, "digits-gan")
    assert gan.kind == ModelKind.generate
    assert [(s.name, s.dtype, s.shape) for s in gan.inputs] == [
        ("latent", "float32", [-1, 64]),
        ("label", "int64", [-1]),
    ]
    assert [(s.name, s.shape) for s in gan.outputs] == [("image", [-1, 32, 32, 1])]
    assert gan.generator is not None and gan.generator.latent_size == 64
    assert gan.generator.class_count == 10
    assert gan.postprocessing is not None
    assert (gan.postprocessing.scale, gan.postprocessing.offset) == (127.5, 127.5)
    assert gan.sha256 == sha256_of(repository / "digits-gan" / "1" / MODEL_FILE)
    assert gan.parity_tolerance == 1e-3
    assert gan.parity_max_abs_error is not None and gan.parity_max_abs_error <= 1e-3
    assert 0.0 <= gan.quality["class_agreement"] <= 1.0
    assert set(gan.quality["diversity"]) == {str(digit) for digit in range(10)}
    assert gan.quality["classifier"] == {"name": "digits", "version": 1}


def test_published_models_run_in_onnx_runtime(repository: Path) -> None:
    split = load_digits_split()
    classifier = cpu_session(repository / "digits" / "1" / MODEL_FILE)
    probabilities = classifier.run(None, {"image": to_model_input(split.test_images[:5])})[0]
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    generator = cpu_session(repository / "digits-gan" / "1" / MODEL_FILE)
    latent = np.random.default_rng(0).standard_normal((3, 64), dtype=np.float32)
    images = generator.run(None, {"latent": latent, "label": np.array([0, 5, 9])})[0]
    assert images.shape == (3, 32, 32, 1)
    assert images.min() >= -1.0 and images.max() <= 1.0


def test_models_lists_every_version_as_json(
    aimass: Aimass, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aimass("models", "--repository", str(repository), "--json") == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows if row["version"] == 1}
    assert by_name["digits"]["kind"] == "classify"
    # The Open Inference Protocol's model metadata.
    assert by_name["digits"]["versions"] == ["1"]
    assert by_name["digits-gan"]["inputs"][0] == {
        "name": "latent",
        "datatype": "FP32",
        "shape": [-1, 64],
    }
    assert "test_accuracy" in by_name["digits"]["quality"]
    assert "class_agreement" in by_name["digits-gan"]["quality"]
    for row in by_name.values():
        assert row["parity_max_abs_error"] <= row["parity_tolerance"]
        assert row["size_bytes"] == (repository / row["name"] / "1" / MODEL_FILE).stat().st_size


def test_models_prints_a_table(
    aimass: Aimass, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aimass("models", "--repository", str(repository)) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "NAME", "VERSION", "KIND", "INPUTS", "OUTPUTS", "SIZE", "QUALITY", "PARITY",
    ]  # fmt: skip
    assert any(line.startswith("digits ") and "test_accuracy=" in line for line in lines)
    assert any(
        "class_agreement=" in line
        and "latent FP32[?, 64]" in line
        and "image FP32[?, 32, 32, 1]" in line
        for line in lines
    )


def test_generator_alone_uses_the_latest_digits_and_is_reproducible(
    aimass: Aimass, repository: Path
) -> None:
    code = aimass(
        "export", "zoo", "--only", "digits-gan", "--quick", "--repository", str(repository)
    )
    assert code == 0
    assert published_versions(repository, "digits-gan") == [1, 2]
    second = manifest(repository, "digits-gan", 2)
    assert second.quality["classifier"] == {"name": "digits", "version": 1}
    # Same seed, same data: the same weights, so the same images to the bit. (The files
    # differ: tf2onnx numbers its node names per process.)
    feeds = {
        "latent": np.random.default_rng(3).standard_normal((10, 64), dtype=np.float32),
        "label": np.arange(10),
    }
    first_images, second_images = (
        cpu_session(repository / "digits-gan" / str(version) / MODEL_FILE).run(None, feeds)[0]
        for version in (1, 2)
    )
    np.testing.assert_array_equal(first_images, second_images)


def test_generator_without_a_classifier_is_refused(
    aimass: Aimass, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        aimass("export", "zoo", "--only", "digits-gan", "--quick", "--repository", str(tmp_path))
        == 1
    )
    error = capsys.readouterr().err
    assert "digits-gan needs the digits classifier" in error
    assert "publish it first (--only digits,digits-gan)" in error


def test_unknown_zoo_model_is_refused(
    aimass: Aimass, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aimass("export", "zoo", "--only", "digits,resnet", "--repository", str(tmp_path)) == 1
    assert (
        "unknown model(s) ['resnet']; expected some of "
        "digits,digits-embed,digits-gan,wine,diabetes,charlm,alexnet"
    ) in capsys.readouterr().err


def test_models_on_an_empty_repository(
    aimass: Aimass, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aimass("models", "--repository", str(tmp_path / "none"), "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_skip_existing_publishes_nothing_new(
    aimass: Aimass, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = published_versions(repository, "digits")
    code = aimass(
        "export", "zoo", "--only", "digits", "--skip-existing", "--repository", str(repository)
    )
    assert code == 0
    assert "every requested model already has a version" in capsys.readouterr().out
    assert published_versions(repository, "digits") == before


def test_alexnet_flags_without_alexnet_are_refused(
    aimass: Aimass, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = aimass(
        "export", "zoo", "--only", "digits", "--weights", "w.h5", "--repository", str(tmp_path)
    )
    assert code == 1
    assert "--weights and --labels apply to alexnet" in capsys.readouterr().err


def test_a_model_that_misses_its_quality_gate_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aimass.export import training
    from aimass.export.errors import QualityError
    from aimass.export.recipes import ZooOptions, publish_zoo

    # One epoch stands in for a training run gone wrong: far below 0.97 test accuracy.
    monkeypatch.setattr(training, "CLASSIFIER_SCHEDULE", training.CLASSIFIER_QUICK)
    with pytest.raises(QualityError, match=r"test accuracy 0\.\d+, expected at least 0\.97"):
        publish_zoo(["digits"], ZooOptions(repository=tmp_path), lambda message: None)
    assert published_versions(tmp_path, "digits") == []
