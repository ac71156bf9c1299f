"""Reading what a worker stored: a job's status, its decoded result, its typed error.

Pure functions over the JSON document in ``celery-task-meta-<id>`` (Celery's "meta":
``status``, ``result``, ``date_done``, ...); the sync and asyncio clients share them.
"""

from __future__ import annotations

import base64
import json
from enum import StrEnum
from typing import Any

from aimass.producer.codecs import png_from_base64, tensor_from_bytes
from aimass.producer.errors import AimassError, JobExpired, error_from_result


class JobStatus(StrEnum):
    queued = "queued"  # submitted, not yet taken by a worker's batch
    started = "started"  # a worker is running it
    succeeded = "succeeded"  # the result is stored
    failed = "failed"  # the typed error is stored
    expired = "expired"  # not started before its deadline; dropped
    unknown = "unknown"  # nobody submitted this id (or its records have expired)


_STATUSES = {
    "PENDING": JobStatus.queued,
    "RECEIVED": JobStatus.queued,
    "RETRY": JobStatus.queued,
    "STARTED": JobStatus.started,
    "SUCCESS": JobStatus.succeeded,
    "FAILURE": JobStatus.failed,
    "REVOKED": JobStatus.expired,
}
# Celery states after which nothing more is stored.
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def parse_meta(raw: bytes | str | None) -> dict[str, Any] | None:
    """The stored meta document, or ``None`` when there is none. A stored value that is
    not a JSON object (written by something other than a worker) reads as a failure
    with ``ModelError`` saying so, so that a caller gets a typed error, not a crash."""
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        return _unreadable(f"is not JSON ({exc})")
    if not isinstance(meta, dict):
        return _unreadable(f"is JSON but not an object (a {type(meta).__name__})")
    return meta


def _unreadable(why: str) -> dict[str, Any]:
    return {"status": "FAILURE", "result": {
        "exc_type": "ModelError", "exc_module": "aimass.producer.errors",
        "exc_message": [f"the job's stored result {why}; a worker stores a Celery "
                        "result document (a JSON object with status and result)"]}}


def is_final(meta: dict[str, Any] | None) -> bool:
    return meta is not None and meta.get("status") in FINAL_STATES


def status_of(meta: dict[str, Any] | None, submitted: bool) -> JobStatus:
    """A job's status from its stored meta and whether its submission record exists.

    Celery alone reads PENDING for both a queued job and an id nobody sent; the record
    tells them apart.
    """
    if meta is not None:
        return _STATUSES.get(str(meta.get("status")), JobStatus.queued)
    return JobStatus.queued if submitted else JobStatus.unknown


def decode_result(job_id: str, meta: dict[str, Any], decode: bool = True) -> dict[str, Any]:
    """The result of a finished job; raises its typed error if it failed or expired.

    With ``decode``, generated images become PIL images (``format="png"``) or numpy
    arrays (``format="tensor"``); without it, the stored JSON is returned as it is.
    """
    status = meta.get("status")
    result = meta.get("result")
    if status == "SUCCESS" and isinstance(result, dict):
        if decode and isinstance(result.get("images"), list):
            return {**result, "images": [decode_image(image) for image in result["images"]]}
        return dict(result)
    raise error_of(job_id, meta)


def error_of(job_id: str, meta: dict[str, Any]) -> AimassError:
    """The typed error a failed or expired job's meta describes."""
    status = meta.get("status")
    result = meta.get("result")
    if status == "REVOKED":
        return JobExpired(f"job {job_id} was not started before its deadline and was dropped")
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        text = message[0] if isinstance(message, list) and message else str(message)
        return error_from_result(str(result["exc_type"]), str(text))
    return error_from_result("ModelError", f"job {job_id} ended as {status} without a result")


def decode_image(image: Any) -> Any:
    """A PIL image from base64 PNG text, a numpy array from a tensor payload."""
    if isinstance(image, str):
        return png_from_base64(image)
    if isinstance(image, dict):
        data = base64.b64decode(image["data"])
        return tensor_from_bytes(image["dtype"], image["shape"], data, max_bytes=len(data))
    return image
