"""The result record: what a worker stores for a job, and what every reader reads.

One JSON document per job in Celery's Redis result backend (``celery-task-meta-<id>``,
``aimass.protocol.keys.result_key``), in the exact shape Celery writes, so that any
Celery client, or a plain GET and a JSON parser, reads it:
``{"status", "result", "traceback", "children", "date_done", "task_id"}``.
Workers write it (``encode``; the take script writes the ``started`` one from
``started_template``), producers, metrics and task events read it (``decode``) and look
at its ``state`` and ``outcome`` instead of at its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

import orjson

from aimass.protocol.errors import AimassError


class ResultState(StrEnum):
    """A record's ``status``, in Celery's state names."""

    started = "STARTED"  # a worker took the job; no answer yet
    succeeded = "SUCCESS"  # ``result`` is the job's result
    failed = "FAILURE"  # ``result`` is its typed error: exc_type, exc_message, exc_module
    revoked = "REVOKED"  # dropped unstarted: its deadline passed, or it was revoked
    # Celery's own states before a worker answers; aimass workers never write them, other
    # Celery workers may. Read as still queued (as is any state this list does not know).
    pending = "PENDING"
    received = "RECEIVED"
    retry = "RETRY"


# States after which nothing more is stored: the first of these written is the answer.
FINAL_STATES = frozenset({ResultState.succeeded, ResultState.failed, ResultState.revoked})


@dataclass(frozen=True)
class ResultRecord:
    """One job's record. ``result`` is the result (succeeded), the error document
    (failed, revoked), or ``{"hostname": ...}`` (started)."""

    task_id: str
    state: ResultState
    result: Any
    date_done: str | None = None

    @classmethod
    def success(cls, task_id: str, result: dict[str, Any]) -> ResultRecord:
        return cls(task_id, ResultState.succeeded, result, _now())

    @classmethod
    def failure(cls, task_id: str, error: AimassError) -> ResultRecord:
        return cls(
            task_id,
            ResultState.failed,
            {
                "exc_type": type(error).__name__,
                "exc_message": [error.message],
                "exc_module": type(error).__module__,
            },
            _now(),
        )

    @classmethod
    def revoked(cls, task_id: str, reason: str) -> ResultRecord:
        """What Celery stores for an expired or revoked task."""
        return cls(
            task_id,
            ResultState.revoked,
            {
                "exc_type": "TaskRevokedError",
                "exc_message": [reason],
                "exc_module": "celery.exceptions",
            },
            _now(),
        )

    @classmethod
    def cancelled(cls, task_id: str) -> ResultRecord:
        """What a producer stores for a job it cancels: REVOKED, as Celery's revoke, and
        ``JobCancelled`` as the type, so that readers tell it from an expired job."""
        return cls(
            task_id,
            ResultState.revoked,
            {
                "exc_type": "JobCancelled",
                "exc_message": ["cancelled by a producer before it ran"],
                "exc_module": "aimass.producer.errors",
            },
            _now(),
        )

    @classmethod
    def started(cls, task_id: str, hostname: str) -> ResultRecord:
        return cls(task_id, ResultState.started, {"hostname": hostname})

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def outcome(self) -> str:
        """How the job ended, as metrics count it: succeeded, failed, expired, cancelled,
        or pending (not ended)."""
        if self.state is ResultState.revoked and self.error_type == "JobCancelled":
            return "cancelled"
        return {
            ResultState.succeeded: "succeeded",
            ResultState.failed: "failed",
            ResultState.revoked: "expired",
        }.get(self.state, "pending")

    @property
    def error_type(self) -> str:
        """The error's type name (``InvalidInput``, ...) for a failed or revoked job."""
        if isinstance(self.result, dict) and self.state in (
            ResultState.failed,
            ResultState.revoked,
        ):
            return str(self.result.get("exc_type", ""))
        return ""

    @property
    def error_message(self) -> str:
        message = self.result.get("exc_message") if isinstance(self.result, dict) else None
        return str(message[0]) if isinstance(message, list) and message else str(message or "")

    def encode(self) -> bytes:
        return self.encoded

    @cached_property
    def encoded(self) -> bytes:
        """The stored bytes, made once (a worker measures them before it stores them).
        orjson: a result of 16 images' top-5 predictions takes 171 us with json, 12 with
        orjson, on the benchmark machine. Same JSON (no NaN ever reaches here)."""
        return orjson.dumps(
            {
                "status": self.state.value,
                "result": self.result,
                "traceback": None,
                "children": [],
                "date_done": self.date_done,
                "task_id": self.task_id,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str | None, task_id: str = "") -> ResultRecord | None:
        """The stored record, or ``None`` when there is none. A stored value that is not
        a result record (written by something other than a worker) reads as a failure
        with ``ModelError`` saying so, so that a reader gets a typed error, not a crash."""
        if not raw:
            return None
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:  # not JSON, or bytes that are not UTF-8
            return _unreadable(task_id, f"is not JSON ({exc})")
        if not isinstance(document, dict):
            return _unreadable(task_id, f"is JSON but not an object (a {type(document).__name__})")
        try:
            state = ResultState(str(document.get("status")))
        except ValueError:
            state = ResultState.pending
        return cls(
            str(document.get("task_id") or task_id),
            state,
            document.get("result"),
            document.get("date_done"),
        )


def started_template(hostname: str) -> tuple[bytes, bytes]:
    """The ``started`` record's bytes before and after its task id (a JSON string), so
    that the take script, which learns the id inside Redis, writes exactly ``encode``'s
    bytes."""
    marker = "\x00"
    head, tail = ResultRecord.started(marker, hostname).encode().split(orjson.dumps(marker))
    return head, tail


def _unreadable(task_id: str, why: str) -> ResultRecord:
    return ResultRecord(
        task_id,
        ResultState.failed,
        {
            "exc_type": "ModelError",
            "exc_module": "aimass.producer.errors",
            "exc_message": [
                f"the job's stored result {why}; a worker stores a Celery result "
                "document (a JSON object with status and result)"
            ],
        },
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()
