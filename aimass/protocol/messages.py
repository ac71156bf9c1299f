"""The task message: Celery protocol v2, built without Celery, as kombu's Redis transport
stores it: a JSON envelope whose ``body`` is base64 of ``[args, kwargs, embed]``,
serialized as msgpack (bytes raw: the client's default, cheapest for both ends) or
JSON (bytes as base64 text). The client builds and encodes ``TaskMessage``; the worker
decodes the same type.

Building the message once and pushing it with one Redis command costs ~0.15 ms a job,
against ~1.2 ms for ``Celery.send_task`` (DESIGN.md); ``docs/enqueue.md`` describes the
same envelope for senders in other languages, and a test compares it with Celery's.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import uuid
from bisect import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

import msgpack
import orjson

from aimass.protocol.errors import InvalidJob
from aimass.protocol.keys import PRIORITY_STEPS, priority_queue_name
from aimass.protocol.tracing import is_traceparent

# The protocol-v2 ``embed`` element: this job has no callbacks, chain or chord.
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# Longest ``kwargsrepr`` (Flower and ``celery inspect`` show it); Celery's default.
KWARGSREPR_LIMIT = 1024

Serializer = Literal["msgpack", "json"]
# content-type and content-encoding of each body format, as Celery writes them.
CONTENT = {"json": ("application/json", "utf-8"), "msgpack": ("application/x-msgpack", "binary")}
# The content types a worker reads (``application/msgpack`` is msgpack's other name).
JSON_TYPES = ("application/json",)
MSGPACK_TYPES = ("application/x-msgpack", "application/msgpack")


def priority_step(priority: int) -> int:
    """The priority list a priority lands in, as kombu's Redis transport rounds it."""
    if not 0 <= priority <= 9:
        raise ValueError(f"priority must be between 0 (served first) and 9, got {priority}")
    return PRIORITY_STEPS[bisect(PRIORITY_STEPS, priority) - 1]


def message_list(queue_model: str, priority: int, tag: str = "") -> str:
    """The Redis list a job of this model and priority is pushed onto (LPUSH), on the
    shard that ``tag`` names (none on one Redis)."""
    return priority_queue_name(queue_model, priority_step(priority), tag)


class InvalidMessage(Exception):
    """Bytes that are not a kombu envelope at all: no job can be read from them."""


@dataclass(frozen=True)
class TaskMessage:
    """One protocol-v2 task message, the one type both ends use: the client builds and
    encodes it, the worker decodes it and reads the job's keyword arguments from it.

    ``body`` is as it travels: base64 text of the serialized ``[args, kwargs, embed]``
    (``properties.body_encoding`` says base64; other senders may send it plain)."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str
    content_encoding: str
    body: Any

    @property
    def task_id(self) -> str | None:
        task_id = self.headers.get("id") or self.properties.get("correlation_id")
        return str(task_id) if task_id else None

    @property
    def task(self) -> str | None:
        return str(self.headers["task"]) if self.headers.get("task") else None

    @property
    def traceparent(self) -> str | None:
        value = self.headers.get("traceparent")
        return value if is_traceparent(value) else None

    @property
    def expires(self) -> datetime | None:
        value = self.headers.get("expires")
        if not value:
            return None
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def is_expired(self, now: datetime) -> bool:
        expires = self.expires
        return expires is not None and now >= expires

    @classmethod
    def build(
        cls,
        task: str,
        job_id: str,
        kwargs: dict[str, Any],
        *,
        queue: str,
        priority: int,
        expires: datetime | None = None,
        serializer: Serializer = "json",
        traceparent: str | None = None,
    ) -> TaskMessage:
        """A job's message. ``kwargs`` in the form ``serializer`` carries: bytes as
        base64 text for JSON, raw for msgpack. ``queue`` is the Celery queue
        (``aimass.<model>``); ``expires`` an aware datetime after which a worker drops
        the job unstarted and stores it as REVOKED; ``traceparent`` the W3C trace
        context the job belongs to (aimass/protocol/tracing.py), a header of its own."""
        content_type, content_encoding = CONTENT[serializer]
        if serializer == "msgpack":
            body = msgpack.packb([[], kwargs, EMBED], use_bin_type=True)
        else:
            body = json.dumps([[], kwargs, EMBED], separators=(",", ":")).encode("utf-8")
        headers: dict[str, Any] = {
            "lang": "py",
            "task": task,
            "id": job_id,
            "shadow": None,
            "eta": None,
            "expires": expires.isoformat() if expires is not None else None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": job_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": kwargs_repr(kwargs),
            "origin": _origin(),
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        }
        if traceparent is not None:
            headers["traceparent"] = traceparent
        # The delivery tag and the job id first: see ``envelope``.
        properties: dict[str, Any] = {
            "delivery_tag": str(uuid.uuid4()),
            "correlation_id": job_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
        }
        return cls(
            headers,
            properties,
            content_type,
            content_encoding,
            base64.b64encode(body).decode("ascii"),
        )

    def envelope(self) -> dict[str, Any]:
        """The kombu envelope, as a JSON object: its properties first, so that the take
        script finds a message's delivery tag and job id at the start of the client's
        messages (``aimass.protocol.queues.ENCODER_MARK``)."""
        return {
            "properties": self.properties,
            "headers": self.headers,
            "body": self.body,
            "content-encoding": self.content_encoding,
            "content-type": self.content_type,
        }

    def encode(self) -> bytes:
        """The bytes pushed onto the Redis list (UTF-8 JSON; orjson: a 16-image job's
        envelope takes 70 us with json on the benchmark machine)."""
        return orjson.dumps(self.envelope())

    @classmethod
    def decode(cls, raw: bytes | str) -> TaskMessage:
        """Parse kombu's JSON envelope (not the job inside it)."""
        try:
            envelope = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidMessage(f"queue entry is not a kombu JSON envelope: {exc}") from None
        except RecursionError:  # Redis's Lua decoder takes a few levels more than Python's
            raise InvalidMessage("queue entry is nested too deeply to decode") from None
        if not isinstance(envelope, dict):
            raise InvalidMessage("queue entry is not a kombu JSON envelope (not an object)")
        return cls.from_envelope(envelope)

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> TaskMessage:
        return cls(
            _object(envelope.get("headers")),
            _object(envelope.get("properties")),
            str(envelope.get("content-type") or ""),
            str(envelope.get("content-encoding") or ""),
            envelope.get("body"),
        )

    def payload(self) -> tuple[list[Any], Any, dict[str, Any]]:
        """``(args, kwargs, embed)``, the body deserialized as JSON or msgpack; anything
        else (pickle, YAML, unknown) is refused with ``InvalidJob``, as is a body that is
        not a Celery task body."""
        content_type = self.content_type.split(";")[0].strip().lower()
        if content_type not in JSON_TYPES + MSGPACK_TYPES:
            raise InvalidJob(
                f"content type {self.content_type!r} is refused; send application/json "
                "or application/x-msgpack (pickle is never accepted)"
            )
        body = self.body
        if self.properties.get("body_encoding") == "base64":
            try:
                body = base64.b64decode(body or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise InvalidJob(
                    "message body is not valid base64 (body_encoding base64)"
                ) from None
        try:
            if content_type in MSGPACK_TYPES:
                payload = msgpack.unpackb(_as_bytes(body), raw=False, strict_map_key=False)
            else:
                payload = json.loads(body) if isinstance(body, bytes | str) else body
        except (
            ValueError,
            TypeError,
            msgpack.ExtraData,
            msgpack.FormatError,
            msgpack.StackError,
        ) as exc:
            raise InvalidJob(
                f"message body is not valid {content_type}: {exc or type(exc).__name__}"
            ) from None
        except RecursionError:
            raise InvalidJob(
                f"message body is nested too deeply to decode as "
                f"{content_type}; aimass jobs are a few levels deep"
            ) from None
        # Protocol 2 bodies are [args, kwargs, embed]; protocol 1 bodies are a dict.
        if isinstance(payload, list) and len(payload) == 3:
            args, kwargs, embed = payload
            return args, kwargs, embed
        if isinstance(payload, dict) and "kwargs" in payload:
            return payload.get("args") or [], payload.get("kwargs"), {}
        raise InvalidJob("message body is not a Celery task body: expected [args, kwargs, embed]")

    def kwargs(self) -> Any:
        """The job's keyword arguments (aimass tasks take no positional ones)."""
        args, kwargs, _embed = self.payload()
        if args:
            raise InvalidJob(
                f"aimass tasks take keyword arguments only; got {len(args)} positional arguments"
            )
        return kwargs


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("latin-1", errors="replace")
    raise InvalidJob("msgpack body must be bytes")


def kwargs_repr(kwargs: dict[str, Any]) -> str:
    """A short repr of the kwargs for monitoring: long values (base64 images) elided."""
    shown = {key: _short(value) for key, value in kwargs.items()}
    text = repr(shown)
    return text if len(text) <= KWARGSREPR_LIMIT else text[: KWARGSREPR_LIMIT - 3] + "..."


def _short(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return f"<{len(value)} items>"
    if isinstance(value, dict):
        return {key: _short(item) for key, item in value.items()}
    if isinstance(value, str) and len(value) > 64:
        return f"<{len(value)} chars>"
    if isinstance(value, bytes) and len(value) > 64:
        return f"<{len(value)} bytes>"
    return value


@cache
def _hostname() -> str:
    return socket.gethostname()


def _origin() -> str:
    return f"{os.getpid()}@{_hostname()}"
