"""Reading what a worker stored: a job's status, its decoded result, its typed error.

Pure functions over the job's ``ResultRecord`` (``aimass.protocol.records``); the sync
and asyncio clients share them.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Any

from aimass.protocol.codecs import png_from_base64, tensor_from_bytes
from aimass.protocol.errors import AimassError, JobCancelled, JobExpired, error_from_result
from aimass.protocol.records import ResultRecord, ResultState
from aimass.protocol.tensors import array_from_document


class JobStatus(StrEnum):
    queued = "queued"  # submitted, no answer yet (and not known to be started)
    started = "started"  # a worker holds it (only where workers track it: AIMASS_TRACK_STARTED)
    succeeded = "succeeded"  # the result is stored
    failed = "failed"  # the typed error is stored
    expired = "expired"  # not started before its deadline; dropped
    cancelled = "cancelled"  # cancelled by a producer before it ran; dropped
    unknown = "unknown"  # nobody submitted this id (or its records have expired)


_STATUSES = {
    ResultState.started: JobStatus.started,
    ResultState.succeeded: JobStatus.succeeded,
    ResultState.failed: JobStatus.failed,
    ResultState.revoked: JobStatus.expired,
}


def is_final(record: ResultRecord | None) -> bool:
    return record is not None and record.final


def status_of(record: ResultRecord | None, submitted: bool) -> JobStatus:
    """A job's status from its stored record and whether its submission marker exists.

    Celery alone reads PENDING for both a queued job and an id nobody sent; the
    submission marker tells them apart.
    """
    if record is not None:
        if record.outcome == "cancelled":
            return JobStatus.cancelled
        return _STATUSES.get(record.state, JobStatus.queued)
    return JobStatus.queued if submitted else JobStatus.unknown


def decode_result(job_id: str, record: ResultRecord, decode: bool = True) -> dict[str, Any]:
    """The result of a finished job; raises its typed error if it failed or expired.

    With ``decode``, generated images become PIL images (``format="png"``) or numpy
    arrays (``format="tensor"``), and an infer result gains ``arrays``: its output
    tensors as numpy arrays, by name; without it, the stored JSON is returned as it is.
    """
    result = record.result
    if record.state is ResultState.succeeded and isinstance(result, dict):
        if decode and isinstance(result.get("images"), list):
            return {**result, "images": [decode_image(image) for image in result["images"]]}
        if decode and isinstance(result.get("outputs"), list):
            arrays = {str(out["name"]): array_from_document(out) for out in result["outputs"]}
            return {**result, "arrays": arrays}
        return dict(result)
    raise error_of(job_id, record)


def error_of(job_id: str, record: ResultRecord) -> AimassError:
    """The typed error a failed or expired job's record describes."""
    if record.outcome == "cancelled":
        return JobCancelled(f"job {job_id} was cancelled before it ran")
    if record.state is ResultState.revoked:
        return JobExpired(f"job {job_id} was not started before its deadline and was dropped")
    if record.error_type:
        return error_from_result(record.error_type, record.error_message)
    return error_from_result("ModelError", f"job {job_id} ended as {record.state} without a result")


def decode_image(image: Any) -> Any:
    """A PIL image from base64 PNG text, a numpy array from a tensor payload."""
    if isinstance(image, str):
        return png_from_base64(image)
    if isinstance(image, dict):
        data = base64.b64decode(image["data"])
        return tensor_from_bytes(image["dtype"], image["shape"], data, max_bytes=len(data))
    return image
