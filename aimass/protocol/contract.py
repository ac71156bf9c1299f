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
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from aimass.protocol.errors import InvalidJob
from aimass.protocol.manifest import ModelKind
from aimass.protocol.tensors import Datatype

CONTRACT_VERSION = 1

CLASSIFY_TASK = "aimass.classify"
GENERATE_TASK = "aimass.generate"
INFER_TASK = "aimass.infer"
SEQUENCE_TASK = "aimass.sequence"
TASKS: dict[ModelKind, str] = {
    ModelKind.classify: CLASSIFY_TASK,
    ModelKind.generate: GENERATE_TASK,
    ModelKind.tensor: INFER_TASK,
    ModelKind.sequence: SEQUENCE_TASK,
}
# The kind of job each task name carries (a worker reads it from the message's headers).
TASK_KINDS: dict[str, ModelKind] = {task: kind for kind, task in TASKS.items()}

DTYPES = ("float32", "float16", "float64", "uint8", "int8", "int32", "int64", "bool")


class Priority(IntEnum):
    """Job priority levels; kombu's Redis transport serves lower numbers first."""

    high = 0  # overtakes everything queued at lower levels
    normal = 3  # what the client sends by default
    low = 6  # bulk work that can wait


def task_name(kind: ModelKind) -> str:
    """The task that runs jobs for models of this kind."""
    return TASKS[kind]


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


def _data_to_json(value: bytes | list[Any]) -> str | list[Any]:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


# A tensor's data: a flat or nested list, or raw little-endian bytes (base64 in JSON).
TensorData = Annotated[
    bytes | list[Any],
    PlainSerializer(_data_to_json, when_used="json"),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "array", "description": "values, flat or nested, row-major"},
                {
                    "type": "string",
                    "contentEncoding": "base64",
                    "description": "the little-endian bytes, row-major",
                },
            ]
        }
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorPayload(_Model):
    """A raw tensor: little-endian bytes in C order."""

    dtype: Literal["float32", "float16", "float64", "uint8", "int8", "int32", "int64", "bool"]
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)
    data: WireBytes


class InputItem(_Model):
    """One input of a classify job: an encoded image (PNG, JPEG, NPY), a raw tensor, or
    ``features``: numbers as a JSON list (nested for an input of several dimensions),
    which the worker converts to the model input's datatype as the Open Inference
    Protocol converts JSON data (integers fit any numeric input, other numbers a
    floating-point one)."""

    image: WireBytes | None = None
    tensor: TensorPayload | None = None
    features: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> InputItem:
        given = [self.image, self.tensor, self.features]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "each input needs exactly one of 'image' or 'tensor' (or 'features', a list "
                "of numbers)"
            )
        return self


MAX_INPUTS = 1024  # images (or tensors) in one job


class ClassifyJob(_Model):
    """Keyword arguments of ``aimass.classify``: the images (or feature vectors) as
    ``inputs`` (one item each), or as one ``batch`` tensor that stacks them along its
    first dimension (uint8 pixels N x H x W or N x H x W x C, or model-ready values). A
    result holds one list of predictions per input, in order, either way."""

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


MAX_CONDITION = 4096  # numbers in one condition vector


class GenerateJob(_Model):
    """Keyword arguments of ``aimass.generate``."""

    model: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)
    count: int = Field(default=1, ge=1, le=MAX_INPUTS)
    labels: list[Annotated[int, Field(ge=0)]] | None = None
    # For a generator conditioned on a vector: one vector per image.
    conditions: (
        list[Annotated[list[float], Field(min_length=1, max_length=MAX_CONDITION)]] | None
    ) = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    format: Literal["png", "tensor"] = "png"

    @model_validator(mode="after")
    def _labels_match_count(self) -> GenerateJob:
        if self.labels is not None and len(self.labels) != self.count:
            raise ValueError(
                f"'labels' has {len(self.labels)} entries but 'count' is {self.count}; "
                "give one label per image, or none"
            )
        if self.conditions is not None and len(self.conditions) != self.count:
            raise ValueError(
                f"'conditions' has {len(self.conditions)} vectors but 'count' is {self.count}; "
                "give one condition vector per image"
            )
        return self


MAX_TENSORS = 64  # named tensors in one infer job


class InferInput(_Model):
    """One named input tensor, as the Open Inference Protocol sends it: ``data`` a flat or
    nested list in row-major order, or the raw little-endian bytes (msgpack bytes, base64
    text in JSON)."""

    name: str = Field(min_length=1, max_length=256)
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)
    datatype: Datatype
    data: TensorData
    parameters: dict[str, Any] | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _data_from_wire(cls, value: Any, info: ValidationInfo) -> Any:
        """Base64 text to bytes here, so that an error names the tensor."""
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(
                    f"tensor {info.data.get('name')!r}: data is text but not base64 ({exc})"
                ) from None
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        if not isinstance(value, bytes | list):
            raise ValueError(
                f"tensor {info.data.get('name')!r}: data must be a list of values or raw "
                f"bytes (base64 text in JSON), got {type(value).__name__}"
            )
        return value


class InferOutputRequest(_Model):
    """An output the job asks for; ``parameters.binary_data`` (Triton's name) returns its
    data as base64 little-endian bytes instead of a JSON list."""

    name: str = Field(min_length=1, max_length=256)
    parameters: dict[str, Any] | None = None

    @property
    def binary(self) -> bool | None:
        value = (self.parameters or {}).get("binary_data")
        return value if isinstance(value, bool) else None


class InferJob(_Model):
    """Keyword arguments of ``aimass.infer``: an Open Inference Protocol request (KServe
    v2's ``inputs``, ``outputs``, ``parameters`` and ``id``) with the model it is for.

    Every model answers it, whatever its kind. ``outputs`` picks some outputs (default:
    all); ``parameters.binary_data_output`` (Triton's name) returns every output as raw
    bytes (base64 text) instead of JSON lists."""

    model: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)
    id: str | None = Field(default=None, max_length=256)
    inputs: list[InferInput] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[InferOutputRequest] | None = Field(default=None, max_length=MAX_TENSORS)
    parameters: dict[str, Any] | None = None

    @property
    def binary_output(self) -> bool:
        return (self.parameters or {}).get("binary_data_output") is True


MAX_PROMPT = 65536  # characters in one sequence job's prompt
MAX_STOPS = 16  # stop strings in one sequence job


class SequenceJob(_Model):
    """Keyword arguments of ``aimass.sequence``: text to continue, decoded token by token.

    Sampling: ``temperature`` 0 takes the likeliest token each step (greedy); otherwise
    the logits are divided by it, cut to the ``top_k`` likeliest tokens (0: all) and to
    the smallest set whose probability reaches ``top_p``, and sampled with a generator
    seeded by ``seed`` (the job id's when absent), so that the same seed, prompt and model
    version give the same text whatever shares its steps. The text ends at the model's end
    token, at the first of the ``stop`` strings (left out of the text), or after
    ``max_tokens`` tokens. ``stream``: the worker also appends the text as it is made to
    the job's stream (``keys.stream_key``)."""

    model: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)
    prompt: str = Field(max_length=MAX_PROMPT)
    max_tokens: int = Field(default=64, ge=1, le=65536)
    temperature: float = Field(default=1.0, ge=0, le=100)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=MAX_STOPS
    )
    stream: bool = False


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
    labels: list[int] | None  # the class of each image; null from a generator of no classes
    seed: int
    timing: Timing


class InferOutput(BaseModel):
    """One output tensor of a result: ``data`` a flat JSON list in row-major order, or
    base64 text of its little-endian bytes where binary data was asked for."""

    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any] | str


class InferResult(BaseModel):
    """The stored result of ``aimass.infer``: an Open Inference Protocol response
    (``model_name``, ``model_version``, ``id``, ``outputs``) and aimass's own fields."""

    model: str
    version: int
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutput]
    timing: Timing


class FinishReason(StrEnum):
    """Why a sequence ended."""

    end = "end"  # the model wrote its end token
    stop = "stop"  # one of the job's stop strings appeared
    length = "length"  # max_tokens tokens were written (or the model's max_length reached)


class SequenceResult(BaseModel):
    """The stored result of ``aimass.sequence``: the whole text written after the prompt."""

    model: str
    version: int
    text: str
    tokens: int  # tokens written (the stop string's, if any, included)
    finish_reason: FinishReason
    seed: int
    prompt_tokens: int
    time_to_first_token_ms: float  # from the job's start to its first token
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


Job = ClassifyJob | GenerateJob | InferJob | SequenceJob

JOB_MODELS: dict[ModelKind, type[Job]] = {
    ModelKind.classify: ClassifyJob,
    ModelKind.generate: GenerateJob,
    ModelKind.tensor: InferJob,
    ModelKind.sequence: SequenceJob,
}


def parse_job(kind: ModelKind, kwargs: Any, *, strict: bool = False) -> Job:
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
