"""aimass producer: the wire contract and the client that enqueues jobs and reads results.

Imports nothing of ONNX Runtime or TensorFlow. The client (and Celery behind it) is
imported on first use, so that ``aimass.protocol.contract`` and
``aimass.protocol.manifest`` stay light.
"""

from __future__ import annotations

from typing import Any

from aimass.protocol.contract import CONTRACT_VERSION, Priority
from aimass.protocol.errors import (
    AimassError,
    InvalidInput,
    InvalidJob,
    JobExpired,
    JobTimeout,
    ModelError,
    PayloadTooLarge,
    QueueFull,
    UnknownModel,
)
from aimass.protocol.manifest import ModelKind

__all__ = [
    "CONTRACT_VERSION",
    "AimassError",
    "Client",
    "InvalidInput",
    "InvalidJob",
    "Job",
    "JobExpired",
    "JobStatus",
    "JobTimeout",
    "ModelError",
    "ModelKind",
    "PayloadTooLarge",
    "Priority",
    "QueueFull",
    "UnknownModel",
]


def __getattr__(name: str) -> Any:
    if name in ("Client", "Job", "JobStatus"):
        from aimass.producer import client

        return getattr(client, name)
    raise AttributeError(f"module 'producer' has no attribute {name!r}")
