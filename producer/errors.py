"""The typed errors where a stored failure names them (``exc_module``): Celery clients
import this module to rebuild a job's error. They are defined in
:mod:`aimass.protocol.errors`; this name is part of the wire, not deprecated."""

from aimass.protocol.errors import (
    AimassError,
    InvalidInput,
    InvalidJob,
    JobCancelled,
    JobExpired,
    JobTimeout,
    ModelError,
    PayloadTooLarge,
    QueueFull,
    UnknownModel,
    WorkerLost,
)

__all__ = [
    "AimassError",
    "InvalidInput",
    "InvalidJob",
    "JobCancelled",
    "JobExpired",
    "JobTimeout",
    "ModelError",
    "PayloadTooLarge",
    "QueueFull",
    "UnknownModel",
    "WorkerLost",
]
