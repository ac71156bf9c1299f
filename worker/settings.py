"""Worker settings: built once at start-up from the environment, overridden by the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aimass.producer.keys import DEFAULT_RESULT_TTL_S
from aimass.producer.manifest import DEFAULT_REPOSITORY, REPOSITORY_ENV
from aimass.worker.buckets import parse_bucket_setting

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs to know; see the README for each variable."""

    redis_url: str = DEFAULT_REDIS_URL
    model_repository: Path = DEFAULT_REPOSITORY
    # "auto" (every visible GPU, else CPU), "cpu", or a comma list of GPU indices.
    devices: str = "auto"
    # Only these models (empty: every model in the repository).
    models: tuple[str, ...] = ()
    # Override every manifest's batching limits when set.
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    # Shape-stable batching (worker/buckets.py): "auto" pads batches up to fixed sizes,
    # one session each, on a GPU, and runs exact sizes on the CPU; "on", "off", or sizes
    # like "1,8,32" instead of the manifests' buckets.
    batch_buckets: str = "auto"
    # Worker processes per GPU (0: as many as the cores allow, see worker/supervisor.py);
    # with --devices cpu, processes sharing the CPU (0: one).
    procs_per_gpu: int = 0
    # A worker asked for a GPU that ends up on the CPU fails `aimass check` unless this
    # is set: it would serve, but far slower than planned.
    allow_cpu_fallback: bool = False
    # Jobs a worker process holds at once (taken from Redis, waiting or running).
    concurrency: int = 64
    # "bulk": take many jobs per Redis call and settle a batch's results in one call
    # (fast); "celery": Celery's own consumer, one message at a time (conventional).
    consumer: str = "bulk"
    # How often an idle bulk consumer looks at its queues; producers that publish a
    # wake-up (the aimass client does) are served at once.
    idle_poll_ms: float = 20.0
    # How long a delivered, unacknowledged job stays with its worker before Redis hands it
    # to another: longer than the worst queue wait plus run time, short enough that a dead
    # worker's jobs do not wait long.
    visibility_timeout_s: int = 300
    # How long one batch may run before its jobs fail with ModelError ("timed out") and
    # the run is interrupted (0: no limit). Keep it below the visibility timeout, or a
    # stuck job is handed to another worker while this one still holds it.
    job_time_limit_s: float = 60.0
    # How long results (and submission records) are kept.
    result_ttl_s: int = DEFAULT_RESULT_TTL_S
    # Caps on what one job may carry.
    max_payload_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    # Cap on one whole queue message: larger ones fail with PayloadTooLarge before they
    # are decoded. Room for one tensor at max_payload_bytes, base64 twice (kwargs, body).
    max_message_bytes: int = 32 * 1024 * 1024
    # ONNX Runtime threads per session; 0 lets aimass pick from the cores per process.
    intra_op_threads: int = 0
    tensorrt: bool = False
    tensorrt_cache: Path = Path(".trt-cache")
    metrics_port: int = 0
    # How often to look for newly published versions (0: never).
    reload_interval_s: float = 5.0
    log_level: str = "INFO"
    hostname: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Settings from ``REDIS_URL`` and ``AIMASS_*`` variables; call once at start-up."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default: Any, convert: Any = str) -> Any:
            value = env.get(name)
            if value is None or value == "":
                return default
            try:
                return convert(value)
            except ValueError:
                expected = _EXPECTED.get(convert, convert.__name__)
                raise ValueError(f"{name}={value!r} is not a valid {expected}") from None

        def optional(convert: Any) -> Any:
            return lambda value: None if value.lower() == "none" else convert(value)

        return cls(
            redis_url=get("REDIS_URL", defaults.redis_url),
            model_repository=get(REPOSITORY_ENV, defaults.model_repository, Path),
            devices=get("AIMASS_DEVICES", defaults.devices),
            models=tuple(
                name for name in get("AIMASS_MODELS", "").split(",") if name.strip()
            ),
            max_batch_size=get("AIMASS_MAX_BATCH_SIZE", None, optional(int)),
            max_queue_delay_ms=get("AIMASS_MAX_QUEUE_DELAY_MS", None, optional(float)),
            batch_buckets=get("AIMASS_BATCH_BUCKETS", defaults.batch_buckets, _buckets),
            procs_per_gpu=get("AIMASS_PROCS_PER_GPU", defaults.procs_per_gpu, _non_negative),
            allow_cpu_fallback=get("AIMASS_ALLOW_CPU_FALLBACK", False, _flag),
            concurrency=get("AIMASS_CONCURRENCY", defaults.concurrency, int),
            consumer=get("AIMASS_CONSUMER", defaults.consumer).lower(),
            idle_poll_ms=get("AIMASS_IDLE_POLL_MS", defaults.idle_poll_ms, float),
            visibility_timeout_s=get(
                "AIMASS_VISIBILITY_TIMEOUT_S", defaults.visibility_timeout_s, int
            ),
            job_time_limit_s=get("AIMASS_JOB_TIME_LIMIT_S", defaults.job_time_limit_s, float),
            result_ttl_s=get("AIMASS_RESULT_TTL_S", defaults.result_ttl_s, int),
            max_payload_bytes=get("AIMASS_MAX_PAYLOAD_BYTES", defaults.max_payload_bytes, int),
            max_image_pixels=get("AIMASS_MAX_IMAGE_PIXELS", defaults.max_image_pixels, int),
            max_message_bytes=get("AIMASS_MAX_MESSAGE_BYTES", defaults.max_message_bytes, int),
            intra_op_threads=get("AIMASS_INTRA_OP_THREADS", defaults.intra_op_threads, int),
            tensorrt=get("AIMASS_TENSORRT", False, _flag),
            tensorrt_cache=get("AIMASS_TENSORRT_CACHE", defaults.tensorrt_cache, Path),
            metrics_port=get("AIMASS_METRICS_PORT", defaults.metrics_port, int),
            reload_interval_s=get("AIMASS_RELOAD_INTERVAL_S", defaults.reload_interval_s, float),
            log_level=get("AIMASS_LOG_LEVEL", defaults.log_level).upper(),
        )

    def bucket_setting(self) -> str | tuple[int, ...]:
        return parse_bucket_setting(self.batch_buckets)

    def override(self, **changes: Any) -> WorkerSettings:
        """A copy with the CLI's flags applied; ``None`` means "not given"."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _buckets(value: str) -> str:
    parse_bucket_setting(value)  # raises ValueError, with the variable's name, when bad
    return value.strip().lower()


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(value)


_EXPECTED: dict[Any, str] = {
    _buckets: "batch bucket setting (auto, on, off, or sizes like 1,8,32)",
    _non_negative: "count (0 or more)",
    _flag: "boolean (1, true, yes, on or 0, false, no, off)",
}
