"""Generators of every form through a real worker: one conditioned on a vector, one with
only a latent input (unconditional), beside the class-conditioned ``tiny-gan``; and the
typed errors a job gets for what its generator does not take."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aimass.embedded_redis import RedisServer
from aimass.producer.client import Client
from aimass.protocol.errors import InvalidInput, InvalidJob
from tests.support.processes import WorkerProcess
from tests.support.tiny_models import build_repository, publish_conditioned_generator

pytestmark = pytest.mark.integration

CONDITION = 8  # the vector generator's condition: value k brightens row k


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_repository(tmp_path_factory.mktemp("generators"))
    publish_conditioned_generator(root, "tiny-free", 0)
    publish_conditioned_generator(root, "tiny-vector", CONDITION)
    return root


@pytest.fixture(scope="module")
def client(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One worker for the module's tests, on a Redis of its own."""
    folder = tmp_path_factory.mktemp("generator-run")
    with RedisServer(folder / "redis") as server:
        worker = WorkerProcess(server.url, repository, folder / "worker.log").start(90)
        try:
            with Client(server.url) as client:
                yield client
        finally:
            worker.stop()


def rows(client: Client, images: list[np.ndarray]) -> list[str]:
    """What ``tiny`` sees in each image: its brightest row."""
    result = client.classify(images, model="tiny", top_k=1).result(timeout=30)
    return [p[0]["label"] for p in result["predictions"]]


def test_a_vector_conditioned_generator_makes_what_each_vector_asks(client: Client) -> None:
    conditions = np.zeros((4, CONDITION), dtype=np.float32)
    for image, row in enumerate((2, 5, 0, 7)):
        conditions[image, row] = 4.0
    result = client.generate(
        model="tiny-vector", count=4, conditions=conditions.tolist(), seed=3, format="tensor"
    ).result(timeout=30)
    assert result["labels"] is None and result["seed"] == 3
    pixels = [
        np.clip(img[..., 0] * 127.5 + 127.5, 0, 255).astype(np.uint8) for img in result["images"]
    ]
    assert rows(client, pixels) == ["2", "5", "0", "7"]


def test_an_unconditional_generator_takes_a_seed_alone(client: Client) -> None:
    first = client.generate(model="tiny-free", count=3, seed=11, format="tensor").result(30)
    again = client.generate(model="tiny-free", count=3, seed=11, format="tensor").result(30)
    other = client.generate(model="tiny-free", count=3, seed=12, format="tensor").result(30)
    assert first["labels"] is None
    for a, b in zip(first["images"], again["images"], strict=True):
        np.testing.assert_array_equal(a, b)  # the same seed, the same images
    assert not np.array_equal(first["images"][0], other["images"][0])
    assert len(client.generate(model="tiny-free", count=2).result(30)["images"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"model": "tiny-free", "labels": [1]}, InvalidJob, "not class-conditioned"),
        (
            {"model": "tiny-free", "conditions": [[1.0] * CONDITION]},
            InvalidJob,
            "not conditioned on a vector",
        ),
        ({"model": "tiny-vector"}, InvalidJob, "send 'conditions', one vector per image"),
        (
            {"model": "tiny-vector", "conditions": [[1.0, 2.0]]},
            InvalidInput,
            f"takes vectors of {CONDITION}",
        ),
        (
            {"model": "tiny-vector", "labels": [3], "conditions": [[0.0] * CONDITION]},
            InvalidJob,
            "not class-conditioned",
        ),
        (
            {"model": "tiny-gan", "conditions": [[0.0] * CONDITION]},
            InvalidJob,
            "it takes 'labels' (0 to 7)",
        ),
    ],
)
def test_a_generator_refuses_what_it_does_not_take_and_goes_on(
    client: Client, kwargs: dict, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        client.generate(count=1, **kwargs).result(timeout=30)
    # The worker is unharmed: a class-conditioned job right after is answered.
    done = client.generate(model="tiny-gan", count=2, labels=[4, 6]).result(timeout=30)
    assert done["labels"] == [4, 6]


def test_conditions_must_be_one_per_image(client: Client) -> None:
    with pytest.raises(InvalidJob, match="'conditions' has 1 vectors but 'count' is 2"):
        client.generate(model="tiny-vector", count=2, conditions=[[0.0] * CONDITION]).result(30)
