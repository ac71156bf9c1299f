"""One job ready to enqueue: its id, kind, validated kwargs, priority and deadline.

Pure: building a submission checks its kwargs against the contract (so a bad job fails
at the producer with ``InvalidJob``, before it costs a round trip) and encodes inputs;
``aimass.producer.enqueue`` sends it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, cast

from aimass.protocol.codecs import InputLike, encode_inputs
from aimass.protocol.contract import Priority, parse_job, task_name
from aimass.protocol.errors import InvalidJob
from aimass.protocol.keys import queue_name
from aimass.protocol.manifest import ModelKind, is_valid_model_name
from aimass.protocol.messages import (
    CONTENT,
    Serializer,
    TaskMessage,
    message_list,
    priority_step,
)
from aimass.protocol.tensors import TensorInputs, encode_tensors
from aimass.protocol.tracing import current_traceparent

# A deadline: seconds from now, a duration, or a point in time (naive means local time).
Deadline = float | timedelta | datetime

MAX_JOB_ID_LENGTH = 200


def expires_at(deadline: Deadline | None, now: datetime | None = None) -> datetime | None:
    """The aware UTC time a deadline falls at (``None``: no deadline)."""
    if deadline is None:
        return None
    now = now or datetime.now(UTC)
    if isinstance(deadline, datetime):
        return deadline.astimezone(UTC)
    if isinstance(deadline, timedelta):
        return now + deadline
    if isinstance(deadline, int | float) and not isinstance(deadline, bool):
        return now + timedelta(seconds=float(deadline))
    raise TypeError(
        f"deadline must be seconds from now, a timedelta or a datetime, "
        f"got {type(deadline).__name__}"
    )


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_JOB_ID_LENGTH:
        raise ValueError(
            f"job_id must be a non-empty string of at most {MAX_JOB_ID_LENGTH} characters, "
            f"got {job_id!r}"
        )
    return job_id


@dataclass(frozen=True)
class Submission:
    """A job as it will be enqueued; build with ``classify``, ``generate``, ``infer`` or
    ``sequence``."""

    kind: ModelKind
    kwargs: dict[str, Any]  # contract kwargs in their JSON form (bytes as base64)
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    priority: int = Priority.normal
    expires: datetime | None = None  # aware; a worker drops the job unstarted after it
    # The message body: msgpack carries bytes raw (a third fewer bytes than base64, and
    # nothing for the worker to decode twice); JSON is readable with any tool.
    serializer: Serializer = "msgpack"
    # The kwargs with bytes raw, as msgpack sends them (derived from ``kwargs`` if unset).
    raw_kwargs: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_job_id(self.job_id)
        priority_step(self.priority)
        if self.serializer not in CONTENT:
            raise ValueError(f"serializer must be 'msgpack' or 'json', got {self.serializer!r}")

    @classmethod
    def classify(
        cls,
        inputs: InputLike | Sequence[InputLike],
        *,
        model: str,
        version: int | None = None,
        top_k: int = 5,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
        serializer: Serializer = "msgpack",
    ) -> Submission:
        """A classify job of one or many images: file paths, bytes, PIL images or numpy
        arrays (uint8 pixel arrays go as raw uint8 tensors, several of one shape stacked
        in one ``batch`` tensor; other dtypes as NPY)."""
        items: list[InputLike] = (
            list(inputs) if isinstance(inputs, list | tuple) else [cast(InputLike, inputs)]
        )
        kwargs = {"model": model, "version": version, "top_k": top_k, **encode_inputs(items)}
        return cls.from_kwargs(ModelKind.classify, kwargs, job_id, priority, deadline, serializer)

    @classmethod
    def generate(
        cls,
        *,
        model: str,
        count: int = 1,
        labels: Sequence[int] | None = None,
        seed: int | None = None,
        format: str = "png",
        version: int | None = None,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
        serializer: Serializer = "msgpack",
        conditions: Sequence[Sequence[float]] | None = None,
    ) -> Submission:
        """A generate job: ``count`` images, of the classes in ``labels`` if given, and for
        a generator conditioned on a vector, one of ``conditions`` each."""
        kwargs: dict[str, Any] = {
            "model": model,
            "version": version,
            "count": count,
            "labels": list(labels) if labels is not None else None,
            "seed": seed,
            "format": format,
        }
        if conditions is not None:  # absent otherwise: workers before it refuse the field
            kwargs["conditions"] = [[float(x) for x in vector] for vector in conditions]
        return cls.from_kwargs(ModelKind.generate, kwargs, job_id, priority, deadline, serializer)

    @classmethod
    def infer(
        cls,
        inputs: TensorInputs,
        *,
        model: str,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        version: int | None = None,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
        serializer: Serializer = "msgpack",
    ) -> Submission:
        """An infer job: the model's named input tensors, as ``{name: array}`` (numpy
        arrays, or lists) or as the Open Inference Protocol's input dicts (``name``,
        ``shape``, ``datatype``, ``data``) that a Triton or KServe request holds.
        ``outputs`` picks some outputs (default: all); ``binary`` returns them as raw
        bytes (numpy arrays either way once decoded), else as JSON lists."""
        kwargs: dict[str, Any] = {
            "model": model,
            "version": version,
            "id": request_id,
            "inputs": encode_tensors(inputs, raw=serializer == "msgpack"),
            "parameters": {**(parameters or {}), "binary_data_output": binary},
        }
        if outputs is not None:
            kwargs["outputs"] = [{"name": name} for name in outputs]
        return cls.from_kwargs(ModelKind.tensor, kwargs, job_id, priority, deadline, serializer)

    @classmethod
    def sequence(
        cls,
        prompt: str,
        *,
        model: str,
        max_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stream: bool = False,
        version: int | None = None,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
        serializer: Serializer = "msgpack",
    ) -> Submission:
        """A sequence job: the text a sequence model writes after ``prompt`` (see
        ``SequenceJob``); ``stream``: also as it is made (``job.stream()``)."""
        kwargs: dict[str, Any] = {
            "model": model,
            "version": version,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "seed": seed,
            "stop": list(stop),
            "stream": stream,
        }
        return cls.from_kwargs(ModelKind.sequence, kwargs, job_id, priority, deadline, serializer)

    @classmethod
    def from_kwargs(
        cls,
        kind: ModelKind,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
        serializer: Serializer = "msgpack",
    ) -> Submission:
        """A job from contract kwargs (bytes raw or as base64 text)."""
        job = parse_job(kind, kwargs)  # raises InvalidJob saying what is wrong
        if not is_valid_model_name(job.model):
            raise InvalidJob(
                f"{job.model!r} is not a valid model name: expected lowercase "
                "letters, digits, '-', '_' or '.', starting with a letter or "
                "digit (no workers would ever serve its queue)"
            )
        # None fields are the defaults: leave them off the wire.
        return cls(
            kind=kind,
            kwargs=job.model_dump(mode="json", exclude_none=True),
            job_id=job_id if job_id is not None else str(uuid.uuid4()),
            priority=int(priority),
            expires=expires_at(deadline),
            serializer=serializer,
            raw_kwargs=(job.model_dump(exclude_none=True) if serializer == "msgpack" else None),
        )

    @property
    def model(self) -> str:
        return str(self.kwargs["model"])

    @property
    def queue(self) -> str:
        """The Celery queue of the job's model."""
        return queue_name(self.model)

    @property
    def list_name(self) -> str:
        """The Redis list the message goes onto: the queue's list for its priority."""
        return message_list(self.model, self.priority)

    def message(self) -> bytes:
        """The protocol-v2 message, as pushed onto ``list_name`` (built once)."""
        return self._message

    @cached_property
    def _message(self) -> bytes:
        kwargs = self.kwargs
        if self.serializer == "msgpack":
            kwargs = self.raw_kwargs or parse_job(self.kind, kwargs).model_dump(exclude_none=True)
        return TaskMessage.build(
            task_name(self.kind),
            self.job_id,
            kwargs,
            queue=self.queue,
            priority=self.priority,
            expires=self.expires,
            serializer=self.serializer,
            traceparent=current_traceparent(),
        ).encode()

    def record(self) -> str:
        """The submission marker stored under ``aimass:job:<id>``."""
        return json.dumps(
            {
                "kind": str(self.kind),
                "model": self.model,
                "priority": self.priority,
                "submitted_at": time.time(),
                "expires": self.expires.isoformat() if self.expires else None,
            }
        )
