"""Worker settings: built once at start-up from the environment, overridden by the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aimass.producer.keys import DEFAULT_RESULT_TTL_S
from aimass.producer.manifest import DEFAULT_REPOSITORY, REPOSITORY_ENV

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
                raise ValueError(f"{name}={value!r} is not a valid {convert.__name__}") from None

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
            tensorrt=get("AIMASS_TENSORRT", "0") in ("1", "true", "yes"),
            tensorrt_cache=get("AIMASS_TENSORRT_CACHE", defaults.tensorrt_cache, Path),
            metrics_port=get("AIMASS_METRICS_PORT", defaults.metrics_port, int),
            reload_interval_s=get("AIMASS_RELOAD_INTERVAL_S", defaults.reload_interval_s, float),
            log_level=get("AIMASS_LOG_LEVEL", defaults.log_level).upper(),
        )

    def override(self, **changes: Any) -> WorkerSettings:
        """A copy with the CLI's flags applied; ``None`` means "not given"."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
