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


def priority_queue_name(model: str, step: int, tag: str = "") -> str:
    """The Redis list that holds a model's jobs of one priority step (of the shard that
    ``tag`` names, on a cluster)."""
    base = f"{queue_name(model)}{tag}"
    return base if step == 0 else f"{base}{PRIORITY_SEPARATOR}{step}"


def priority_queue_names(model: str) -> list[str]:
    """All the Redis lists of a model's queue, one per priority step, served in order."""
    return [priority_queue_name(model, step) for step in PRIORITY_STEPS]


def result_key(job_id: str) -> str:
    return f"{RESULT_KEY_PREFIX}{job_id}"


def submitted_key(job_id: str) -> str:
    return f"{SUBMITTED_PREFIX}{job_id}"


def worker_key(hostname: str) -> str:
    return f"{WORKER_PREFIX}{hostname}"


def dead_letter_key(model: str) -> str:
    return f"{DEAD_PREFIX}{model}"


def cancelled_key(job_id: str) -> str:
    return f"{CANCELLED_PREFIX}{job_id}"


def stream_key(job_id: str) -> str:
    return f"{STREAM_PREFIX}{job_id}"


# On a Redis Cluster (and only there) each model's queue is split into shards, one hash
# tag per shard shared by all models: every key a script touches for a job lives on its
# shard's slot. A job's shard comes from its id alone (CRC-32 of its UTF-8 bytes, modulo
# the shard count), so that anyone holding the id computes its keys; the shard count is
# recorded once in the cluster under SHARDS_KEY (SET NX) and read by every party. On one
# Redis nothing is tagged: every name above stays as it is. See docs/enqueue.md.
SHARDS_KEY = "aimass:shards"
SHARD_TAG_PREFIX = "aimass."
CLUSTER_SLOTS = 16384
DELIVERY_TAG_COUNTER = "aimass:delivery-tags"

# A take of a worker that is behind moves its messages inside Redis onto a list of the
# worker's own, a hold ("aimass:hold:<worker's take id>.<n><tag>", never reused), before
# recording them in kombu's bookkeeping; HOLDS_INDEX is a sorted set of the holds by
# the time they were filled (each member JSON: [hold, the list its messages came from]),
# from which every worker puts back a dead worker's holds after the visibility timeout.
# See docs/reliability.md.
HOLD_PREFIX = "aimass:hold:"
HOLDS_INDEX = "aimass:holds"


def shard_tags(count: int) -> tuple[str, ...]:
    """The hash tags of ``count`` shards: shard n's tag is ``{aimass.<k>}`` for the
    smallest k whose slot lies near the middle of the n-th of ``count`` equal slices of
    the slot space. A cluster whose primaries hold equal slot ranges (``redis-cli
    --cluster create``) then holds the same number of shards on each primary when
    ``count`` is a multiple of theirs."""
    from redis.crc import key_slot

    width = CLUSTER_SLOTS / count
    tags, k = [], 0
    for n in range(count):
        low, high = int(width * (n + 0.25)), int(width * (n + 0.75))
        k = 0
        while not low <= key_slot(f"{SHARD_TAG_PREFIX}{k}".encode()) <= high:
            k += 1
        tags.append(f"{{{SHARD_TAG_PREFIX}{k}}}")
    return tuple(tags)


def shard_of(job_id: str, count: int) -> int:
    """The shard of a job: CRC-32 (zlib's) of its id's UTF-8 bytes, modulo the count."""
    import zlib

    return zlib.crc32(job_id.encode()) % count


class KeySpace:
    """Every key and channel name of a deployment: the names above on one Redis (no
    shards: ``tags == ("",)``), and their tagged forms on a cluster, where a name ends
    with (or, for a job's keys, has before the job id) its shard's hash tag."""

    def __init__(self, tags: tuple[str, ...] = ("",)) -> None:
        self.tags = tags
        self.sharded = tags != ("",)

    def tag(self, job_id: str) -> str:
        """The hash tag of a job's shard ("" on one Redis)."""
        return self.tags[shard_of(job_id, len(self.tags))] if self.sharded else ""

    def result_key(self, job_id: str) -> str:
        return f"{RESULT_KEY_PREFIX}{self.tag(job_id)}{job_id}"

    def submitted_key(self, job_id: str) -> str:
        return f"{SUBMITTED_PREFIX}{self.tag(job_id)}{job_id}"

    def cancelled_key(self, job_id: str) -> str:
        return f"{CANCELLED_PREFIX}{self.tag(job_id)}{job_id}"

    def stream_key(self, job_id: str) -> str:
        return f"{STREAM_PREFIX}{self.tag(job_id)}{job_id}"

    def job_id_of(self, key: str) -> str:
        """The job id in a result key (or its channel)."""
        rest = key.removeprefix(RESULT_KEY_PREFIX)
        return rest.split("}", 1)[1] if self.sharded and rest.startswith("{") else rest

    def queue(self, model: str, tag: str = "") -> str:
        """A shard's base queue (step 0): ``aimass.<model><tag>``."""
        return f"{queue_name(model)}{tag}"

    def lists(self, model: str, tag: str = "") -> list[str]:
        """A shard's priority lists, in the order they are served."""
        return [priority_queue_name(model, step, tag) for step in PRIORITY_STEPS]

    def job_lists(self, model: str, job_id: str) -> list[str]:
        """The priority lists of the shard a job goes to."""
        return self.lists(model, self.tag(job_id))

    def wake_channel(self, model: str, tag: str = "") -> str:
        return f"{WAKE_PREFIX}{model}{tag}"

    def dead_letter_keys(self, model: str) -> list[str]:
        """A model's dead-letter lists, one per shard."""
        return [dead_letter_key(f"{model}{tag}") for tag in self.tags]

    def hold(self, take_id: str, tag: str = "") -> str:
        """A worker's hold on a shard (its take id has no braces: the tag decides the slot)."""
        return f"{HOLD_PREFIX}{take_id}{tag}"

    def bookkeeping(self, tag: str = "") -> list[str]:
        """A shard's unacked hash, unacked index, runs hash, delivery-tag counter and
        holds index."""
        return [
            UNACKED_HASH + tag,
            UNACKED_INDEX + tag,
            RUNS_HASH + tag,
            DELIVERY_TAG_COUNTER + tag,
            HOLDS_INDEX + tag,
        ]


PLAIN = KeySpace()
