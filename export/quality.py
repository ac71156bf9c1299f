"""Quality figures of exported models, measured on the ONNX files as a worker runs them.

* classifiers: accuracy on the held-out test split;
* the generator: how often the digits classifier labels a generated image as the class
  that was asked for (class agreement), and how varied the images of one class are
  (mean pairwise L2 distance, next to the same figure for real images of that class:
  a generator that collapses to one image per class has a ratio near 0).

Generated images go through the same path as a job's: latents sampled as a worker
samples them, tanh outputs turned into 8-bit pixels by the manifest's postprocessing,
and those pixels scaled by 1/255 for the classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aimass.export.errors import QualityError
from aimass.export.sessions import cpu_session

POSTPROCESS_SCALE = 127.5
POSTPROCESS_OFFSET = 127.5
_BATCH = 256


def sample_latents(count: int, latent_size: int, seed: int) -> NDArray[np.float32]:
    """Standard normal latents, drawn exactly as a worker draws them for a seeded job."""
    return np.random.default_rng(seed).standard_normal((count, latent_size), dtype=np.float32)


def classify(classifier: bytes | Path, images: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Predicted class of each uint8 image (n, h, w) or (n, h, w, c)."""
    session = cpu_session(classifier)
    pixels = images if images.ndim == 4 else images[..., np.newaxis]
    inputs = pixels.astype(np.float32) / np.float32(255.0)
    batches = [
        session.run(None, {"image": inputs[start : start + _BATCH]})[0]
        for start in range(0, len(inputs), _BATCH)
    ]
    return np.concatenate(batches).argmax(axis=1)


def test_accuracy(
    classifier: bytes | Path, images: NDArray[np.uint8], labels: NDArray[np.int64]
) -> float:
    return float(np.mean(classify(classifier, images) == labels))


def generate(
    generator: bytes | Path, latents: NDArray[np.float32], labels: NDArray[np.int64]
) -> NDArray[np.uint8]:
    """uint8 images (n, h, w, c) from the generator, postprocessed as the manifest says."""
    session = cpu_session(generator)
    label_type = next(item.type for item in session.get_inputs() if item.name == "label")
    label_dtype = np.int32 if label_type == "tensor(int32)" else np.int64
    outputs = [
        session.run(
            None,
            {
                "latent": latents[start : start + _BATCH],
                "label": labels[start : start + _BATCH].astype(label_dtype),
            },
        )[0]
        for start in range(0, len(latents), _BATCH)
    ]
    pixels = np.concatenate(outputs) * POSTPROCESS_SCALE + POSTPROCESS_OFFSET
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def mean_pairwise_distance(images: NDArray[np.uint8]) -> float:
    """Mean L2 distance between all pairs of images, on pixels scaled to [0, 1]."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    squared = (flat**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * flat @ flat.T, 0.0))
    count = len(images)
    return float(distances.sum() / (count * (count - 1))) if count > 1 else 0.0


def generator_quality(
    generator: bytes | Path,
    classifier: bytes | Path,
    real_images: NDArray[np.uint8],
    real_labels: NDArray[np.int64],
    latent_size: int,
    class_count: int,
    per_class: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Class agreement (overall and per class) and diversity per class, for the manifest."""
    labels = np.arange(per_class * class_count, dtype=np.int64) % class_count
    images = generate(generator, sample_latents(len(labels), latent_size, seed), labels)
    agrees = classify(classifier, images) == labels
    diversity: dict[str, dict[str, float]] = {}
    for digit in range(class_count):
        generated = mean_pairwise_distance(images[labels == digit])
        real = mean_pairwise_distance(real_images[real_labels == digit])
        diversity[str(digit)] = {
            "generated": round(generated, 4),
            "real": round(real, 4),
            "ratio": round(generated / real, 4) if real else 0.0,
        }
    return {
        "class_agreement": float(agrees.mean()),
        "class_agreement_per_class": {
            str(digit): float(agrees[labels == digit].mean()) for digit in range(class_count)
        },
        "diversity": diversity,
        "diversity_ratio_mean": round(float(np.mean([d["ratio"] for d in diversity.values()])), 4),
        "samples_per_class": per_class,
        "latent_seed": seed,
    }


def run_outputs(model: bytes | Path, feeds: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """Every output of the model on ``feeds``, by name, in batches of 256 rows."""
    session = cpu_session(model)
    names = [output.name for output in session.get_outputs()]
    rows = len(next(iter(feeds.values())))
    batches = [
        session.run(names, {key: value[start : start + _BATCH] for key, value in feeds.items()})
        for start in range(0, rows, _BATCH)
    ]
    return {name: np.concatenate([batch[i] for batch in batches]) for i, name in enumerate(names)}


def regression_quality(
    predicted: NDArray[np.floating], targets: NDArray[np.floating]
) -> dict[str, float]:
    """R² (1 - residual / total sum of squares), mean absolute and root mean squared error."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    residual = targets - predicted
    total = float(np.sum((targets - targets.mean()) ** 2))
    return {
        "r2": 1.0 - float(np.sum(residual**2)) / total if total else 0.0,
        "mae": float(np.mean(np.abs(residual))),
        "rmse": float(np.sqrt(np.mean(residual**2))),
    }


def retrieval_accuracy(
    query: NDArray[np.floating],
    query_labels: NDArray[np.int64],
    gallery: NDArray[np.floating],
    gallery_labels: NDArray[np.int64],
) -> float:
    """How often a query's nearest gallery item by cosine similarity shares its label:
    what a similarity search over the embeddings would return first."""

    def unit(vectors: NDArray[np.floating]) -> NDArray[np.float64]:
        vectors = np.asarray(vectors, dtype=np.float64)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    nearest = (unit(query) @ unit(gallery).T).argmax(axis=1)
    return float(np.mean(gallery_labels[nearest] == query_labels))


def enforce_gate(name: str, figure: str, value: float, minimum: float, quick: bool) -> None:
    """Refuse to publish a model whose ``figure`` is below ``minimum`` (unless ``quick``)."""
    if not (value >= minimum or quick):
        _refuse(name, figure, value, f"at least {minimum}")


def enforce_ceiling(name: str, figure: str, value: float, maximum: float, quick: bool) -> None:
    """Refuse to publish a model whose ``figure`` (a loss) is above ``maximum``."""
    if not (value <= maximum or quick):
        _refuse(name, figure, value, f"at most {maximum}")


def _refuse(name: str, figure: str, value: float, expected: str) -> None:
    raise QualityError(
        f"{name} missed its quality gate: {figure} {value:.4f}, expected {expected}. "
        "Nothing was published; check the training schedule and seed"
    )
