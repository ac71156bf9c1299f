"""The typed errors of the wire contract.

A failed job is stored as a Celery FAILURE whose exception type is one of these names
(``exc_type``) with a message saying what was wrong and what was expected
(``exc_message``). The names are part of contract version 1: never rename them.
"""

from __future__ import annotations


class AimassError(Exception):
    """Base of every error that aimass reports about a job."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[AimassError], tuple[str]]:
        return (type(self), (self.message,))


class InvalidJob(AimassError):
    """The job's arguments do not match the contract (missing or wrong fields)."""


class UnknownModel(AimassError):
    """No such model, or no such version of it, in the worker's repository."""


class InvalidInput(AimassError):
    """An input could not be decoded, or does not fit the model's input spec."""


class PayloadTooLarge(AimassError):
    """An input or the whole job is larger than the configured caps."""


class QueueFull(AimassError):
    """The model's queue is above its bound; try again later (backpressure)."""


class ModelError(AimassError):
    """The model failed while running; the job itself looked valid."""


class WorkerLost(AimassError):
    """The job's worker died each time it held or ran it, as many times as workers allow
    (``AIMASS_MAX_DELIVERIES``): it is parked in its model's dead-letter list and not run
    again unless sent again (``aimass dead retry``)."""


class JobCancelled(AimassError):
    """The job was cancelled by a producer (``Job.cancel``, ``aimass cancel``) before it
    ran; it is stored as Celery's REVOKED state with this type."""


class JobExpired(AimassError):
    """The job was not started before its deadline and was dropped."""


class JobTimeout(AimassError, TimeoutError):
    """The result did not arrive within the time the caller was willing to wait."""


# The names a worker may put in a FAILURE result, by name.
JOB_ERRORS: dict[str, type[AimassError]] = {
    cls.__name__: cls
    for cls in (
        InvalidJob,
        UnknownModel,
        InvalidInput,
        PayloadTooLarge,
        QueueFull,
        ModelError,
        WorkerLost,
        JobExpired,
    )
}


def error_from_result(exc_type: str, message: str) -> AimassError:
    """Rebuild a typed error from a stored FAILURE's ``exc_type`` and message."""
    cls = JOB_ERRORS.get(exc_type, ModelError)
    if cls is ModelError and exc_type not in JOB_ERRORS:
        message = f"{exc_type}: {message}"
    return cls(message)


# The module a stored failure names (``exc_module``), which Celery clients import to rebuild
# the error: these errors were defined there before the contract had a package of its own,
# and the wire keeps that name (``aimass.producer.errors`` re-exports them).
WIRE_MODULE = "aimass.producer.errors"
for _error in (AimassError, JobCancelled, JobTimeout, *JOB_ERRORS.values()):
    _error.__module__ = WIRE_MODULE
