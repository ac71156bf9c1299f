"""What each kind of model does with a job: inputs in, result out. No queue here."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aimass.protocol.codecs import array_to_png, tensor_payload
from aimass.protocol.contract import ClassifyJob, GenerateJob
from aimass.protocol.errors import InvalidInput, InvalidJob, ModelError, PayloadTooLarge
from aimass.protocol.manifest import Manifest, ModelKind
from aimass.worker.batcher import BatchOutput
from aimass.worker.preprocess import decode_batch, decode_input
from aimass.worker.runs import Feeds


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int
    max_image_pixels: int


class ModelLogic(Protocol):
    kind: ModelKind

    def prepare(self, job: Any, limits: Limits, job_id: str | None) -> tuple[Feeds, int, Any]:
        """Validate and decode a job: the model feeds, their batch size, and what
        ``finish`` needs to shape the result."""
        ...

    def finish(self, job: Any, context: Any, output: BatchOutput) -> dict[str, Any]:
        """The job's result fields (without model, version and timing)."""
        ...

    def warmup_feeds(self, batch_size: int) -> Feeds: ...


class Classifier:
    kind = ModelKind.classify

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.spec = manifest.inputs[0]
        self.labels = manifest.labels
        self.dtype = np.dtype(self.spec.dtype)

    def prepare(
        self, job: ClassifyJob, limits: Limits, job_id: str | None = None
    ) -> tuple[Feeds, int, None]:
        prep, name = self.manifest.preprocessing, self.manifest.name
        if job.batch is not None:
            try:
                batch = decode_batch(
                    job.batch,
                    self.spec,
                    prep,
                    name,
                    limits.max_payload_bytes,
                    limits.max_image_pixels,
                )
            except (InvalidInput, PayloadTooLarge) as exc:
                raise type(exc)(f"batch: {exc.message}") from None
        else:
            arrays = []
            for index, item in enumerate(job.inputs or ()):
                try:
                    arrays.append(
                        decode_input(
                            item,
                            self.spec,
                            prep,
                            name,
                            limits.max_payload_bytes,
                            limits.max_image_pixels,
                        )
                    )
                except (InvalidInput, PayloadTooLarge) as exc:
                    raise type(exc)(f"inputs[{index}]: {exc.message}") from None
            batch = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
        batch = batch.astype(self.dtype, copy=False)
        return {self.spec.name: batch}, len(batch), None

    def finish(self, job: ClassifyJob, context: None, output: BatchOutput) -> dict[str, Any]:
        scores = output.outputs[0]
        if not np.isfinite(scores).all():
            # JSON has no NaN or Infinity: a result holding them is unreadable outside Python.
            raise ModelError(
                f"model {self.manifest.name!r} produced NaN or infinite scores for this "
                "input; check that its values are in the range the model expects"
            )
        k = min(job.top_k, scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1).tolist()
        labels = self._labels(scores.shape[1])
        predictions = [
            [
                {"label": labels[i], "index": i, "score": score}
                for i, score in zip(indices, row, strict=True)
            ]
            for indices, row in zip(top.tolist(), top_scores, strict=True)
        ]
        return {"predictions": predictions}

    def _labels(self, classes: int) -> list[str]:
        """A label per output class: the manifest's, then the class index as text."""
        if len(self.labels) < classes:
            return [*self.labels, *(str(i) for i in range(len(self.labels), classes))]
        return self.labels

    def warmup_feeds(self, batch_size: int) -> Feeds:
        shape = [batch_size] + [d if d > 0 else 1 for d in self.spec.shape[1:]]
        return {self.spec.name: np.zeros(shape, dtype=self.dtype)}


class Generator:
    kind = ModelKind.generate

    def __init__(self, manifest: Manifest) -> None:
        if manifest.generator is None:
            raise InvalidJob(f"manifest of {manifest.name!r} has no 'generator' section")
        self.manifest = manifest
        self.spec = manifest.generator
        specs = {spec.name: spec for spec in manifest.inputs}
        label = self.spec.label_input if self.spec.class_conditioned else None
        self.label_dtype = np.dtype(specs[label].dtype) if label else None
        condition = self.spec.condition_input
        self.condition_dtype = np.dtype(specs[condition].dtype) if condition else None
        self.post = manifest.postprocessing

    def prepare(
        self, job: GenerateJob, limits: Limits, job_id: str | None = None
    ) -> tuple[Feeds, int, tuple[list[int] | None, int]]:
        seed = job.seed if job.seed is not None else seed_for(job_id)
        rng = np.random.default_rng(seed)
        latents = rng.standard_normal((job.count, self.spec.latent_size), dtype=np.float32)
        feeds: dict[str, np.ndarray] = {self.spec.latent_input: latents}
        labels = self._labels(job, rng)
        if labels is not None and self.spec.label_input and self.label_dtype is not None:
            feeds[self.spec.label_input] = np.asarray(labels, dtype=self.label_dtype)
        if self.spec.condition_input and self.condition_dtype is not None:
            feeds[self.spec.condition_input] = self._conditions(job)
        elif job.conditions is not None:
            raise InvalidJob(
                f"model {self.manifest.name!r} is not conditioned on a vector; send no "
                f"'conditions'{self._takes()}"
            )
        return feeds, job.count, (labels, seed)

    def _labels(self, job: GenerateJob, rng: np.random.Generator) -> list[int] | None:
        """The class of each image: the job's, else drawn; None for a generator of no
        classes (which refuses labels)."""
        count = self.spec.class_count
        if not self.spec.class_conditioned:
            if job.labels is not None:
                raise InvalidJob(
                    f"model {self.manifest.name!r} is not class-conditioned; send no "
                    f"'labels'{self._takes()}"
                )
            return None
        if job.labels is None:
            return [int(x) for x in rng.integers(0, count, job.count)]
        bad = [label for label in job.labels if label >= count]
        if bad:
            raise InvalidInput(
                f"labels {bad} are out of range: model {self.manifest.name!r} has "
                f"{count} classes (0 to {count - 1})"
            )
        return list(job.labels)

    def _conditions(self, job: GenerateJob) -> np.ndarray:
        size = self.spec.condition_size
        if job.conditions is None:
            raise InvalidJob(
                f"model {self.manifest.name!r} is conditioned on a vector of {size} numbers "
                f"per image: send 'conditions', one vector per image ({job.count})"
            )
        wrong = [i for i, vector in enumerate(job.conditions) if len(vector) != size]
        if wrong:
            raise InvalidInput(
                f"conditions {wrong} have {len(job.conditions[wrong[0]])} numbers; model "
                f"{self.manifest.name!r} takes vectors of {size}"
            )
        return np.asarray(job.conditions, dtype=self.condition_dtype)

    def _takes(self) -> str:
        what = []
        if self.spec.class_conditioned:
            what.append(f"'labels' (0 to {self.spec.class_count - 1})")
        if self.spec.condition_input:
            what.append(f"'conditions' ({self.spec.condition_size} numbers each)")
        return f": it takes {' and '.join(what)}" if what else ": it takes only a seed"

    def finish(
        self, job: GenerateJob, context: tuple[list[int] | None, int], output: BatchOutput
    ) -> dict[str, Any]:
        labels, seed = context
        images = output.outputs[0]
        encoded: list[Any]
        if job.format == "tensor":
            encoded = [tensor_payload(image) for image in images]
        else:
            encoded = [
                base64.b64encode(array_to_png(self.to_pixels(image))).decode("ascii")
                for image in images
            ]
        return {"images": encoded, "labels": labels, "seed": seed}

    def to_pixels(self, image: np.ndarray) -> np.ndarray:
        scale, offset = (self.post.scale, self.post.offset) if self.post else (127.5, 127.5)
        if self.post is not None and self.post.layout == "NCHW":
            image = image.transpose(1, 2, 0)
        return np.clip(image * scale + offset, 0, 255).round().astype(np.uint8)

    def warmup_feeds(self, batch_size: int) -> Feeds:
        feeds = {self.spec.latent_input: np.zeros((batch_size, self.spec.latent_size), np.float32)}
        if self.spec.label_input and self.label_dtype is not None:
            feeds[self.spec.label_input] = np.zeros((batch_size,), dtype=self.label_dtype)
        if self.spec.condition_input and self.condition_dtype is not None:
            size = (batch_size, self.spec.condition_size)
            feeds[self.spec.condition_input] = np.zeros(size, dtype=self.condition_dtype)
        return feeds


def seed_for(job_id: str | None) -> int:
    """A job without a seed gets one derived from its id, so that a job delivered twice
    (after a worker died) produces the same images under the same id."""
    if job_id is None:
        return secrets.randbits(63)
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") >> 1


def logic_for(manifest: Manifest) -> ModelLogic:
    """What a classifier or a generator does with its jobs (a tensor model's infer jobs
    are worker/infer.py's)."""
    if manifest.kind is ModelKind.classify:
        return Classifier(manifest)
    if manifest.kind is ModelKind.generate:
        return Generator(manifest)
    raise InvalidJob(f"model {manifest.name!r} is a {manifest.kind} model: it has no kind logic")
