"""``aimass export keras --kind tensor`` end to end: a functional Keras model with two
inputs (a float feature vector, an integer category through an Embedding) and two
outputs is saved, published, served by a real worker, and sent infer jobs from plain
Celery (JSON lists) and from the Python client (raw bytes); every output must match
Keras's own prediction on the same inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import redis
from celery import Celery

from aimass.embedded_redis import RedisServer
from aimass.producer.client import Client, producer_config
from aimass.protocol.manifest import Manifest
from tests.export.conftest import Aimass
from tests.support.processes import WorkerProcess

pytestmark = [pytest.mark.export, pytest.mark.integration]

VOCABULARY = 6
DB = 8


def two_by_two() -> Any:
    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features")
    category = keras.Input((), dtype="int64", name="category")
    embedded = keras.layers.Embedding(VOCABULARY, 3)(category)
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()([features, embedded])
    )
    scores = keras.layers.Dense(3, activation="softmax", name="scores")(hidden)
    value = keras.layers.Dense(1, name="value")(hidden)
    return keras.Model([features, category], [scores, value])


@pytest.fixture(scope="module")
def published(aimass: Aimass, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("tensor-export")
    model = two_by_two()
    model.save(folder / "two.keras")
    repository = folder / "models"
    code = aimass(
        "export",
        "keras",
        str(folder / "two.keras"),
        "--name",
        "two",
        "--kind",
        "tensor",
        "--int-range",
        f"category=0:{VOCABULARY}",
        "--output-tolerance",
        "value=1e-4",
        "--repository",
        str(repository),
    )
    assert code == 0
    return model, repository


@pytest.fixture(scope="module")
def served(
    published: tuple[Any, Path],
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    log = tmp_path_factory.mktemp("logs") / "tensor-worker.log"
    worker = WorkerProcess(url, published[1], log).start()
    yield url
    worker.stop()


def inputs(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((rows, 4)).astype(np.float32)
    return features, rng.integers(0, VOCABULARY, rows).astype(np.int64)


def keras_outputs(model: Any, features: np.ndarray, category: np.ndarray) -> dict[str, Any]:
    predicted = model.predict([features, category], verbose=0)
    return dict(zip(model.output_names, predicted, strict=True))


def test_the_manifest_names_every_tensor(published: tuple[Any, Path]) -> None:
    manifest = Manifest.read(published[1] / "two" / "1")
    assert manifest.kind == "tensor" and manifest.batched
    assert [(s.name, s.dtype, s.shape, s.value_range) for s in manifest.inputs] == [
        ("features", "float32", [-1, 4], None),
        ("category", "int64", [-1], [0, VOCABULARY]),
    ]
    assert sorted((s.name, s.dtype, s.shape) for s in manifest.outputs) == [
        ("scores", "float32", [-1, 3]),
        ("value", "float32", [-1, 1]),
    ]
    assert manifest.output_tolerances == {"scores": 1e-4, "value": 1e-4}
    assert manifest.parity_max_abs_error is not None and manifest.parity_max_abs_error < 1e-4


def test_plain_celery_with_json_lists_gets_keras_answers(
    published: tuple[Any, Path], served: str
) -> None:
    model = published[0]
    features, category = inputs(3, seed=1)
    app = Celery("sender", set_as_current=False)
    app.conf.update(producer_config(served))
    kwargs = {
        "model": "two",
        "inputs": [
            {"name": "features", "shape": [3, 4], "datatype": "FP32", "data": features.tolist()},
            {"name": "category", "shape": [3], "datatype": "INT64", "data": category.tolist()},
        ],
    }
    result = app.send_task("aimass.infer", kwargs=kwargs, queue="aimass.two").get(timeout=60)
    app.close()
    expected = keras_outputs(model, features, category)
    assert result["model_name"] == "two" and result["model_version"] == "1"
    for output in result["outputs"]:
        assert isinstance(output["data"], list)
        got = np.asarray(output["data"], np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, expected[output["name"]], atol=1e-5)


def test_the_client_with_raw_bytes_gets_keras_answers(
    published: tuple[Any, Path], served: str
) -> None:
    model = published[0]
    features, category = inputs(5, seed=2)
    with Client(served) as client:
        result = client.infer("two", {"features": features, "category": category}).result(
            timeout=60
        )
    expected = keras_outputs(model, features, category)
    assert all(isinstance(output["data"], str) for output in result["outputs"])
    assert set(result["arrays"]) == {"scores", "value"}
    for name, array in result["arrays"].items():
        assert array.dtype == np.float32
        np.testing.assert_allclose(array, expected[name], atol=1e-5)


def test_the_users_own_sample_is_the_parity_input(
    aimass: Aimass, published: tuple[Any, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = two_by_two()
    path = tmp_path / "two.keras"
    model.save(path)
    sample = tmp_path / "sample.npz"
    features, category = inputs(4, seed=3)
    np.savez(sample, features=features, category=category)
    code = aimass(
        "export", "keras", str(path), "--name", "mine", "--kind", "tensor",
        "--sample", str(sample), "--repository", str(tmp_path / "models"),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert Manifest.read(tmp_path / "models" / "mine" / "1").inputs[1].value_range is None


def test_an_op_tf2onnx_cannot_convert_is_named_and_nothing_is_published(
    aimass: Aimass, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tf2onnx leaves an op it cannot convert in the graph as the TensorFlow op and goes
    on; the export refuses such a graph, naming the op and the layer it sits in."""
    import tensorflow as tf

    class MatrixExponential(keras.layers.Layer):
        def call(self, flat: Any) -> Any:
            square = tf.linalg.expm(tf.reshape(flat, (-1, 2, 2)))  # MatrixSolve inside
            return tf.reshape(square, (-1, 4))

    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="x")
    model = keras.Model(features, MatrixExponential(name="matrix_exponential")(features))
    saved = tmp_path / "expm"
    model.export(str(saved), verbose=False)
    repository = tmp_path / "repository"
    code = aimass(
        "export",
        "keras",
        str(saved),
        "--name",
        "expm",
        "--kind",
        "tensor",
        "--repository",
        str(repository),
    )
    error = capsys.readouterr().err
    assert code == 1, error
    assert "could not convert" in error and "MatrixSolve" in error, error
    assert "matrix_exponential" in error, error
    assert not (repository / "expm").exists()
