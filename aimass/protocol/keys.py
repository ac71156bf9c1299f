"""The Redis key space of aimass, in one place: every queue and key name.

Celery and kombu own some keys (named here so that nobody guesses); aimass adds a few
of its own under the ``aimass:`` prefix. These names are the wire: a sender in another
language, or an older worker, reads and writes the same bytes.
"""

from __future__ import annotations

# Each model has its own Celery queue, "aimass.<model>" (so "aimass.digits"): a Redis
# list that producers LPUSH task messages onto and workers pop from.
QUEUE_PREFIX = "aimass."

# kombu's Redis transport keeps one list per priority step: "<queue>" for 0 and
# "<queue>\x06\x16<step>" for the others; a lower step is served first. A job's priority
# goes to the list of the highest step at or below it.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's default: every Celery client agrees on it

# The queue Celery's own consumer serves in a worker whose bulk consumer serves the model
# queues: it keeps remote control, inspect and Flower working; no aimass job is sent there.
CELERY_QUEUE = "aimass.celery"

# Celery's default queue in the workers' app: producers always name the model's queue,
# so nothing should land here.
DEFAULT_QUEUE = "aimass.default"

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

# How many times a worker started running each job (its batch reached the model) and
# died before storing its result (a hash, by job id; the entry goes with the result). A
# job whose worker dies each time it runs it is parked after AIMASS_MAX_DELIVERIES such
# runs instead of killing worker after worker; a job that was only held by a worker that
# died for another reason does not count, and one that has such a run behind it runs in a
# batch of its own, so that a poison job's batch mates are not blamed twice.
RUNS_HASH = "aimass:runs"

# Set (with the result TTL) when a producer cancels a job: a worker that takes the job
# afterwards stores nothing and runs nothing. The job's id is also published on
# CANCEL_CHANNEL, so that a worker holding it in a batch not yet run drops it.
CANCELLED_PREFIX = "aimass:cancelled:"
CANCEL_CHANNEL = "aimass:cancel"

# A model's dead-letter list: the messages of jobs parked after too many deliveries,
# exactly as they were queued, for `aimass dead list|retry|purge`.
DEAD_PREFIX = "aimass:dead:"

# A sequence job's text as it is made: a Redis stream (XADD) per job, read by the
# producers that stream it (XREAD from the last entry they saw); TTL: the result TTL.
STREAM_PREFIX = "aimass:stream:"

# One per live worker process: JSON with host, pid, models, versions, providers,
# batch settings and queues; expires unless refreshed (WORKER_HEARTBEAT_TTL_S).
WORKER_PREFIX = "aimass:worker:"
WORKER_HEARTBEAT_TTL_S = 15
WORKER_HEARTBEAT_INTERVAL_S = 5

# Default result TTL: a day.
DEFAULT_RESULT_TTL_S = 24 * 3600


def queue_name(model: str) -> str:
    """The Redis list (Celery queue) that serves one model, for priority step 0."""
    return f"{QUEUE_PREFIX}{model}"


def priority_queue_name(model: str, step: int) -> str:
    """The Redis list that holds a model's jobs of one priority step."""
    base = queue_name(model)
    return base if step == 0 else f"{base}{PRIORITY_SEPARATOR}{step}"


def priority_queue_names(model: str) -> list[str]:
    """All the Redis lists of a model's queue, one per priority step, served in order."""
    return [priority_queue_name(model, step) for step in PRIORITY_STEPS]


def result_key(job_id: str) -> str:
    return f"{RESULT_KEY_PREFIX}{job_id}"


def submitted_key(job_id: str) -> str:
    return f"{SUBMITTED_PREFIX}{job_id}"


def wake_channel(model: str) -> str:
    return f"{WAKE_PREFIX}{model}"


def worker_key(hostname: str) -> str:
    return f"{WORKER_PREFIX}{hostname}"


def dead_letter_key(model: str) -> str:
    return f"{DEAD_PREFIX}{model}"


def cancelled_key(job_id: str) -> str:
    return f"{CANCELLED_PREFIX}{job_id}"


def stream_key(job_id: str) -> str:
    return f"{STREAM_PREFIX}{job_id}"
