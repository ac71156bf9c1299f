"""The wire contract, version 1: task names, job and result models.

Jobs travel as Celery protocol-v2 messages with keyword arguments only, serialized as
JSON (bytes as base64 strings) or msgpack (bytes raw). Results are stored by the
Celery Redis result backend under ``celery-task-meta-<id>``. Fields may be added;
none is renamed without a new contract version. The queue and key names are in
``aimass.protocol.keys``; the model kinds (one task each) in ``aimass.protocol.manifest``.
"""

from __future__ import annotations

import base64
import binascii
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from aimass.protocol.errors import InvalidJob
from aimass.protocol.manifest import ModelKind

CONTRACT_VERSION = 1

CLASSIFY_TASK = "aimass.classify"
GENERATE_TASK = "aimass.generate"

DTYPES = ("float32", "float16", "float64", "uint8", "int8", "int32", "int64", "bool")


class Priority(IntEnum):
    """Job priority levels; kombu's Redis transport serves lower numbers first."""

    high = 0  # overtakes everything queued at lower levels
    normal = 3  # what the client sends by default
    low = 6  # bulk work that can wait


def task_name(kind: ModelKind) -> str:
    """The task that runs jobs for models of this kind."""
    return CLASSIFY_TASK if kind is ModelKind.classify else GENERATE_TASK


def _bytes_from_wire(value: Any) -> Any:
    """JSON carries bytes as base64 text; msgpack carries them raw."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"expected base64 text, got invalid base64 ({exc})") from None
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


WireBytes = Annotated[
    bytes,
    BeforeValidator(_bytes_from_wire),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorPayload(_Model):
    """A raw tensor: little-endian bytes in C order."""

    dtype: Literal["float32", "float16", "float64", "uint8", "int8", "int32", "int64", "bool"]
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)
    data: WireBytes


class InputItem(_Model):
    """One input of a classify job: an encoded image (PNG, JPEG, NPY) or a raw tensor."""

    image: WireBytes | None = None
    tensor: TensorPayload | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> InputItem:
        if (self.image is None) == (self.tensor is None):
            raise ValueError("each input needs exactly one of 'image' or 'tensor'")
        return self


MAX_INPUTS = 1024  # images (or tensors) in one job


class ClassifyJob(_Model):
    """Keyword arguments of ``aimass.classify``: the images as ``inputs`` (one item
    each), or as one ``batch`` tensor that stacks them along its first dimension (uint8
    pixels N x H x W or N x H x W x C, or model-ready values). A result holds one list of
    predictions per image, in order, either way."""

    model: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)
    top_k: int = Field(default=5, ge=1, le=1000)
    inputs: list[InputItem] | None = Field(default=None, min_length=1, max_length=MAX_INPUTS)
    batch: TensorPayload | None = None

    @model_validator(mode="after")
    def _inputs_or_batch(self) -> ClassifyJob:
        if (self.inputs is None) == (self.batch is None):
            raise ValueError(
                "a classify job needs exactly one of 'inputs' (a list of "
                "images) or 'batch' (one tensor of images, N first)"
            )
        if self.batch is not None and not (
            self.batch.shape and 1 <= self.batch.shape[0] <= MAX_INPUTS
        ):
            raise ValueError(
                f"'batch' must stack 1 to {MAX_INPUTS} images along its first "
                f"dimension; its shape is {self.batch.shape}"
            )
        return self


class GenerateJob(_Model):
    """Keyword arguments of ``aimass.generate``."""

    model: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)
    count: int = Field(default=1, ge=1, le=MAX_INPUTS)
    labels: list[Annotated[int, Field(ge=0)]] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    format: Literal["png", "tensor"] = "png"

    @model_validator(mode="after")
    def _labels_match_count(self) -> GenerateJob:
        if self.labels is not None and len(self.labels) != self.count:
            raise ValueError(
                f"'labels' has {len(self.labels)} entries but 'count' is {self.count}; "
                "give one label per image, or none"
            )
        return self


class Timing(BaseModel):
    """Where a job's time went, in milliseconds."""

    queue_ms: float  # from the message's arrival at the worker to the start of its batch
    inference_ms: float  # the batch's session.run time
    batch_size: int  # inputs in the batch this job ran in
    # The batch size the model ran at, padding included, where batches are padded up to
    # fixed sizes (GPU workers); absent where they run at their exact size.
    bucket: int | None = None


class Prediction(BaseModel):
    label: str
    index: int
    score: float


class ClassifyResult(BaseModel):
    """The stored result of ``aimass.classify``: one list of top-k predictions per input."""

    model: str
    version: int
    predictions: list[list[Prediction]]
    timing: Timing


class GenerateResult(BaseModel):
    """The stored result of ``aimass.generate``: base64 PNGs or raw tensors."""

    model: str
    version: int
    images: list[str | TensorPayload]
    labels: list[int]
    seed: int
    timing: Timing


class ErrorResult(BaseModel):
    """What ``celery-task-meta-<id>`` holds in ``result`` for a failed job."""

    exc_type: Literal[
        "InvalidJob",
        "UnknownModel",
        "InvalidInput",
        "PayloadTooLarge",
        "QueueFull",
        "ModelError",
        "WorkerLost",
        "JobExpired",
    ]
    exc_message: list[str]
    exc_module: str


JOB_MODELS: dict[ModelKind, type[ClassifyJob] | type[GenerateJob]] = {
    ModelKind.classify: ClassifyJob,
    ModelKind.generate: GenerateJob,
}


def parse_job(kind: ModelKind, kwargs: Any, *, strict: bool = False) -> ClassifyJob | GenerateJob:
    """Validate a job's keyword arguments, raising ``InvalidJob`` that says what is wrong.

    ``strict`` (what workers use on the wire) takes each field only in its own JSON or
    msgpack type: no ``"3"`` or ``true`` for an integer. The client validates without it,
    so that Python values such as NumPy integers are accepted and sent as plain ones."""
    if not isinstance(kwargs, dict):
        raise InvalidJob(
            f"{task_name(kind)} takes keyword arguments (a JSON object), "
            f"got {type(kwargs).__name__}"
        )
    try:
        return JOB_MODELS[kind].model_validate(kwargs, strict=strict)
    except ValidationError as exc:
        raise InvalidJob(f"invalid {task_name(kind)} job: {describe_validation(exc)}") from None


def describe_validation(exc: ValidationError, limit: int = 5) -> str:
    """A short, readable summary of pydantic's errors: where, what, and what was expected."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "job"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
