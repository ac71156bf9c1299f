"""Worker settings: built once at start-up from the environment, overridden by the CLI.

Every value is checked when the settings are made (``aimass.protocol.settings`` has the
rules): a bad one stops the worker with one line naming its variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, StringConstraints

from aimass.protocol.connections import CELERY_ON_CLUSTER, is_cluster
from aimass.protocol.keys import DEFAULT_RESULT_TTL_S
from aimass.protocol.manifest import DEFAULT_REPOSITORY, REPOSITORY_ENV, is_valid_model_name
from aimass.protocol.settings import (
    DEFAULT_REDIS_URL,
    FLAG_WORDS,
    QUEUE_SHARDS,
    REDIS_URL,
    RESULT_TTL_S,
    Count,
    CountOrOff,
    Duration,
    Flag,
    Port,
    PositiveDuration,
    SettingsError,
    check_changes,
    check_fields,
    checked,
    read_environment,
    warn_unknown_variables,
)
from aimass.worker.buckets import parse_bucket_setting


def _folder(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file")
    return path


def _devices(value: str) -> str:
    text = value.strip().lower()
    if text in ("auto", "cpu"):
        return text
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError("expected auto, cpu or GPU indices")
    return ",".join(dict.fromkeys(str(int(part)) for part in parts))


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return tuple(part for part in value.split(",") if part.strip())
    return value


def _model_name(name: str) -> str:
    if not is_valid_model_name(name):
        raise ValueError(f"{name!r} is not a valid model name")
    return name


def _buckets(value: str) -> str:
    parse_bucket_setting(value)
    return value.strip().lower()


def _batch_limits(value: object) -> object:
    """``64`` (every model), ``digits=128,alexnet=64`` (per model; ``*=32`` for the
    rest), or None (each manifest's own)."""
    if value is None or isinstance(value, int | tuple):
        return value
    text = str(value).strip().lower()
    if text == "none":
        return None
    if "=" not in text:
        return text  # one number for every model: checked as a count
    limits = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, size = part.partition("=")
        name = name.strip()
        if name != "*":
            _model_name(name)
        if not size.strip().isdigit() or int(size) < 1:
            raise ValueError(f"{part!r}: expected model=size with a size of at least 1")
        limits.append((name, int(size)))
    return tuple(limits)


def _none_for(word: str) -> Callable[[object], object]:
    """A validator that reads ``word`` (in any case) as None, and anything else as is."""

    def read(value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == word else value

    return read


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _node_name(name: str | None) -> str | None:
    if name is not None and (not name or any(c.isspace() for c in name)):
        raise ValueError("a node name is one word")
    return name


Folder = Annotated[Path, AfterValidator(_folder)]
Devices = Annotated[str, AfterValidator(_devices)]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_model_name)]
ModelNames = Annotated[tuple[ModelName, ...], BeforeValidator(_comma_list)]
BatchBuckets = Annotated[str, AfterValidator(_buckets)]
Consumer = Annotated[Literal["bulk", "celery"], BeforeValidator(_lower)]
CountRunsAt = Annotated[Literal["take", "start"], BeforeValidator(_lower)]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(_lower)]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
NodeName = Annotated[str | None, AfterValidator(_node_name)]
# "none" (any case) stands for None: each manifest's own limit.
BatchSizeOrNone = Annotated[Count | None, BeforeValidator(_none_for("none"))]
BatchLimits = Annotated[
    Count | tuple[tuple[str, Count], ...] | None, BeforeValidator(_batch_limits)
]
BatchSweep = Annotated[Literal["auto", "on", "off"], BeforeValidator(_lower)]
DelayOrNone = Annotated[Duration | None, BeforeValidator(_none_for("none"))]
# "auto" (any case) stands for None: derived from the models served (jobs_held).
CountOrAuto = Annotated[Count | None, BeforeValidator(_none_for("auto"))]

# The fewest jobs a process holds where AIMASS_CONCURRENCY is auto (and Celery's thread
# pool, where the models are not known yet).
MIN_JOBS_HELD = 64

_FOLDER = "a folder (that need not exist yet), not a file"
_MANIFESTS = "or none (each manifest's own)"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs to know; see the README for each variable."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, metadata=REDIS_URL)
    model_repository: Path = field(
        default=DEFAULT_REPOSITORY,
        metadata=checked(REPOSITORY_ENV, Folder, "model repository", _FOLDER),
    )
    # "auto" (every visible GPU, else CPU), "cpu", or a comma list of GPU indices.
    devices: str = field(
        default="auto",
        metadata=checked(
            "AIMASS_DEVICES", Devices, "device list", "auto, cpu, or GPU indices like 0,1"
        ),
    )
    # Only these models (empty: every model in the repository).
    models: tuple[str, ...] = field(
        default=(),
        metadata=checked(
            "AIMASS_MODELS",
            ModelNames,
            "model list",
            "model names like digits,alexnet (lower-case letters, digits, '.', '_' and '-')",
        ),
    )
    # Override the manifests' batch limits when set: one for every model (64), or one
    # per model (digits=128,alexnet=64, with *=32 for any other).
    max_batch_size: int | tuple[tuple[str, int], ...] | None = field(
        default=None,
        metadata=checked(
            "AIMASS_MAX_BATCH_SIZE",
            BatchLimits,
            "batch size",
            f"a whole number of at least 1, or per model like digits=128,alexnet=64, {_MANIFESTS}",
        ),
    )
    # Measure each model's batch limit at start-up on this process's own device: "auto"
    # on a GPU where neither the setting above nor the manifest gives a GPU limit; "on"
    # everywhere, unless the setting above gives one; "off" never.
    batch_sweep: str = field(
        default="auto",
        metadata=checked(
            "AIMASS_BATCH_SWEEP", BatchSweep, "batch sweep setting", "auto, on or off"
        ),
    )
    max_queue_delay_ms: float | None = field(
        default=None,
        metadata=checked(
            "AIMASS_MAX_QUEUE_DELAY_MS",
            DelayOrNone,
            "queue delay",
            f"0 or more milliseconds, {_MANIFESTS}",
        ),
    )
    # Shape-stable batching (worker/buckets.py): "auto" pads batches up to fixed sizes,
    # one session each, on a GPU, and runs exact sizes on the CPU; "on", "off", or sizes
    # like "1,8,32" instead of the manifests' buckets.
    batch_buckets: str = field(
        default="auto",
        metadata=checked(
            "AIMASS_BATCH_BUCKETS",
            BatchBuckets,
            "batch bucket setting",
            "auto, on, off, or sizes like 1,8,32",
        ),
    )
    # Worker processes per GPU (0: as many as the cores allow, see worker/supervisor.py);
    # with --devices cpu, processes sharing the CPU (0: one).
    procs_per_gpu: int = field(
        default=0,
        metadata=checked(
            "AIMASS_PROCS_PER_GPU",
            CountOrOff,
            "count",
            "0 (as many as the cores allow) or positive",
        ),
    )
    # A worker asked for a GPU that ends up on the CPU fails `aimass check` unless this
    # is set: it would serve, but far slower than planned.
    allow_cpu_fallback: bool = field(
        default=False, metadata=checked("AIMASS_ALLOW_CPU_FALLBACK", Flag, "boolean", FLAG_WORDS)
    )
    # Jobs a worker process holds at once (taken from Redis, decoding, waiting, running or
    # being settled). None ("auto"): twice the most jobs one run of a model it serves
    # takes (its batch limit, or a sequence model's AIMASS_MAX_SEQUENCES), and at least
    # MIN_JOBS_HELD (jobs_held).
    concurrency: int | None = field(
        default=None,
        metadata=checked(
            "AIMASS_CONCURRENCY", CountOrAuto, "count", "auto or a whole number of at least 1"
        ),
    )
    # Sequences a sequence model decodes at once, each step one batch of them all
    # (worker/decoding.py); more jobs wait for one to end.
    max_sequences: int = field(
        default=64,
        metadata=checked("AIMASS_MAX_SEQUENCES", Count, "count", "a whole number of at least 1"),
    )
    # Off: a sequence model decodes one job at a time, the naive way (for comparison).
    sequence_batching: bool = field(
        default=True,
        metadata=checked("AIMASS_SEQUENCE_BATCHING", Flag, "boolean", FLAG_WORDS),
    )
    # "bulk": take many jobs per Redis call and settle a batch's results in one call
    # (fast); "celery": Celery's own consumer, one message at a time (conventional).
    consumer: str = field(
        default="bulk", metadata=checked("AIMASS_CONSUMER", Consumer, "consumer", "bulk or celery")
    )
    # How often an idle bulk consumer looks at its queues; producers that publish a
    # wake-up (the aimass client does) are served at once.
    idle_poll_ms: float = field(
        default=20.0,
        metadata=checked(
            "AIMASS_IDLE_POLL_MS", PositiveDuration, "interval", "a number of milliseconds above 0"
        ),
    )
    # How long a delivered, unacknowledged job stays with its worker before Redis hands it
    # to another: longer than the worst queue wait plus run time, short enough that a dead
    # worker's jobs do not wait long.
    visibility_timeout_s: int = field(
        default=300,
        metadata=checked(
            "AIMASS_VISIBILITY_TIMEOUT_S", Count, "timeout", "a whole number of seconds, at least 1"
        ),
    )
    # How long one batch may run before its jobs fail with ModelError ("timed out") and
    # the run is interrupted (0: no limit). Keep it below the visibility timeout, or a
    # stuck job is handed to another worker while this one still holds it.
    job_time_limit_s: float = field(
        default=60.0,
        metadata=checked(
            "AIMASS_JOB_TIME_LIMIT_S",
            Duration,
            "time limit",
            "0 (no limit) or a positive number of seconds",
        ),
    )
    # How long results (and submission markers) are kept.
    result_ttl_s: int = field(default=DEFAULT_RESULT_TTL_S, metadata=RESULT_TTL_S)
    # Caps on what one job may carry.
    max_payload_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=checked(
            "AIMASS_MAX_PAYLOAD_BYTES", Count, "size", "a whole number of bytes, at least 1"
        ),
    )
    max_image_pixels: int = field(
        default=4096 * 4096,
        metadata=checked(
            "AIMASS_MAX_IMAGE_PIXELS", Count, "size", "a whole number of pixels, at least 1"
        ),
    )
    # Cap on one whole queue message: larger ones fail with PayloadTooLarge before they
    # are decoded. Room for one tensor at max_payload_bytes, base64 twice (kwargs, body).
    max_message_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata=checked(
            "AIMASS_MAX_MESSAGE_BYTES", Count, "size", "a whole number of bytes, at least 1"
        ),
    )
    # ONNX Runtime threads per session; 0 lets aimass pick from the cores per process.
    intra_op_threads: int = field(
        default=0,
        metadata=checked(
            "AIMASS_INTRA_OP_THREADS",
            CountOrOff,
            "thread count",
            "0 (chosen from the cores) or positive",
        ),
    )
    tensorrt: bool = field(
        default=False, metadata=checked("AIMASS_TENSORRT", Flag, "boolean", FLAG_WORDS)
    )
    tensorrt_cache: Path = field(
        default=Path(".trt-cache"),
        metadata=checked("AIMASS_TENSORRT_CACHE", Folder, "TensorRT cache", _FOLDER),
    )
    metrics_port: int = field(
        default=0,
        metadata=checked("AIMASS_METRICS_PORT", Port, "port", "0 (off) or a port from 1 to 65535"),
    )
    # How often to look for newly published versions (0: never).
    reload_interval_s: float = field(
        default=5.0,
        metadata=checked(
            "AIMASS_RELOAD_INTERVAL_S",
            Duration,
            "interval",
            "0 (never) or a positive number of seconds",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=checked(
            "AIMASS_LOG_LEVEL",
            LogLevel,
            "log level",
            "DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)",
        ),
    )
    # "json": one JSON object per line, and a line per settled job (worker/logs.py).
    log_format: str = field(
        default="text",
        metadata=checked("AIMASS_LOG_FORMAT", LogFormat, "log format", "text or json"),
    )
    # Runs of one job that its worker died in before it is parked in its model's
    # dead-letter list instead of run again (0: no cap).
    max_deliveries: int = field(
        default=3,
        metadata=checked("AIMASS_MAX_DELIVERIES", CountOrOff, "count", "0 (no cap) or positive"),
    )
    # When the cap's count of a job's first run is written. "take": as the job is taken, in
    # the take's own round trip, so that a batch starts without waiting for Redis (a job
    # that a dead worker held but had not started counts one run; a job with runs behind
    # it runs alone, and each later run is counted as it starts). "start": every run as
    # its batch starts, a round trip a batch, up to a fifth of a job's Redis CPU in bulk
    # (docs/performance.md, sizing the broker).
    count_runs_at: str = field(
        default="take",
        metadata=checked("AIMASS_COUNT_RUNS_AT", CountRunsAt, "run count", "take or start"),
    )
    # Where a worker is behind (its last take was full and left jobs waiting), its next
    # take of at least this many jobs moves the messages inside Redis and records them in a
    # second round trip (worker/held.py): about a third less work for Redis a job in bulk,
    # for 0.35-0.4 ms more of the worker's CPU a take of 28. 0: every take in one step
    # (docs/performance.md, sizing the broker).
    move_takes_at: int = field(
        default=16,
        metadata=checked("AIMASS_MOVE_TAKES_AT", CountOrOff, "count", "0 (never) or positive"),
    )
    # Store a STARTED result record for each job a worker takes, so that its status
    # reads "started" rather than "queued" until its answer. Off, as in Celery
    # (task_track_started): it costs two more Redis commands per job (the record's SET,
    # and a GET before the result replaces it), where a job otherwise costs about three
    # (docs/performance.md, sizing the broker).
    track_started: bool = field(
        default=False, metadata=checked("AIMASS_TRACK_STARTED", Flag, "boolean", FLAG_WORDS)
    )
    # Cap on one stored result: a larger one fails its job with PayloadTooLarge.
    max_result_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=checked(
            "AIMASS_MAX_RESULT_BYTES", Count, "size", "a whole number of bytes, at least 1"
        ),
    )
    # Only the command line names a Celery node (--hostname); None: aimass-<device>-<pid>.
    hostname: str | None = field(
        default=None,
        metadata=checked("--hostname", NodeName, "node name", "one word such as worker1@%h"),
    )

    # On a Redis Cluster: shards per model queue (0: one per primary; see keys.KeySpace).
    queue_shards: int = field(default=0, metadata=QUEUE_SHARDS)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.consumer == "celery" and is_cluster(self.redis_url):
            raise SettingsError(f"AIMASS_CONSUMER=celery: {CELERY_ON_CLUSTER}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Settings from ``REDIS_URL`` and ``AIMASS_*`` variables; call once at start-up.
        Unset or empty variables keep their defaults; a bad value raises SettingsError."""
        env = os.environ if environ is None else environ
        warn_unknown_variables(env)
        return cls(**read_environment(cls, env))

    def bucket_setting(self) -> str | tuple[int, ...]:
        return parse_bucket_setting(self.batch_buckets)

    def jobs_held(self, batch_limits: Iterable[int] = ()) -> int:
        """How many jobs one process holds at once: ``concurrency`` where it is given;
        where it is auto, twice the largest of ``batch_limits`` (the most jobs one run of
        each served model takes), so that the next batch fills while one runs and is
        settled, and at least ``MIN_JOBS_HELD`` (docs/performance.md, tuning)."""
        if self.concurrency is not None:
            return self.concurrency
        return max([MIN_JOBS_HELD, *(2 * limit for limit in batch_limits)])

    def batch_limit(self, model: str) -> int | None:
        """The operator's batch limit for ``model``, if any (``AIMASS_MAX_BATCH_SIZE``)."""
        limits = self.max_batch_size
        if limits is None or isinstance(limits, int):
            return limits
        given = dict(limits)
        return given.get(model, given.get("*"))

    def override(self, **changes: Any) -> WorkerSettings:
        """A copy with the CLI's flags applied, each checked like the variable it stands
        for; ``None`` means "not given"."""
        given = {name: value for name, value in changes.items() if value is not None}
        return replace(self, **check_changes(type(self), given))
