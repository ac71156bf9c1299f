"""The Redis key space of aimass, in one place.

Celery and kombu own some keys (named here so that nobody guesses); aimass adds a few
of its own under the ``aimass:`` prefix.
"""

from __future__ import annotations

# Celery's result backend: one JSON document per finished (or started) job; its TTL is
# the worker's result TTL (AIMASS_RESULT_TTL_S). Celery also PUBLISHes on this name.
RESULT_KEY_PREFIX = "celery-task-meta-"

# kombu's Redis transport: the hash of delivered-but-unacknowledged messages and the
# sorted set of their delivery times; restored to their queues after the visibility
# timeout when a worker dies holding them.
UNACKED_HASH = "unacked"
UNACKED_INDEX = "unacked_index"
UNACKED_MUTEX = "unacked_mutex"

# Written by the producer when a job is submitted (SET NX, so a job id chosen by the
# caller runs once): lets a reader tell "queued" from "unknown" (Celery alone says
# PENDING for both) and "expired" from "queued". TTL: the result TTL.
SUBMITTED_PREFIX = "aimass:job:"

# Published (by the client's enqueue script) after jobs are pushed onto a model's queue:
# idle workers wake at once instead of at their next poll. Senders that do not publish
# are picked up at the next poll (AIMASS_IDLE_POLL_MS).
WAKE_PREFIX = "aimass:wake:"

# One per live worker process: JSON with host, pid, models, versions, providers,
# batch settings and queues; expires unless refreshed (WORKER_HEARTBEAT_TTL_S).
WORKER_PREFIX = "aimass:worker:"
WORKER_HEARTBEAT_TTL_S = 15
WORKER_HEARTBEAT_INTERVAL_S = 5

# Default result TTL: a day.
DEFAULT_RESULT_TTL_S = 24 * 3600


def result_key(job_id: str) -> str:
    return f"{RESULT_KEY_PREFIX}{job_id}"


def submitted_key(job_id: str) -> str:
    return f"{SUBMITTED_PREFIX}{job_id}"


def wake_channel(model: str) -> str:
    return f"{WAKE_PREFIX}{model}"


def worker_key(hostname: str) -> str:
    return f"{WORKER_PREFIX}{hostname}"
