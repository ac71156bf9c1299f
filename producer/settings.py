"""Producer settings: built once (``ClientSettings.from_env()``), passed to a client."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aimass.producer.keys import DEFAULT_RESULT_TTL_S

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Jobs a model's queue may hold before submit raises QueueFull.
DEFAULT_MAX_QUEUE_DEPTH = 10_000


@dataclass(frozen=True)
class ClientSettings:
    """What a producer needs to know: where Redis is and the limits it keeps."""

    redis_url: str = DEFAULT_REDIS_URL
    # Soft bound on a model's queued jobs (all priorities), checked at submit; 0: none.
    max_queue_depth: int = DEFAULT_MAX_QUEUE_DEPTH
    # How long submission records live; match the workers' AIMASS_RESULT_TTL_S.
    result_ttl_s: int = DEFAULT_RESULT_TTL_S

    def __post_init__(self) -> None:
        if self.max_queue_depth < 0:
            raise ValueError(
                f"max_queue_depth must be 0 (no bound) or positive, got {self.max_queue_depth}")
        if self.result_ttl_s <= 0:
            raise ValueError(f"result_ttl_s must be positive, got {self.result_ttl_s}")

    @classmethod
    def for_url(cls, url: str, max_queue_depth: int = DEFAULT_MAX_QUEUE_DEPTH,
                result_ttl_s: int | None = None) -> ClientSettings:
        """Settings given as a client's arguments (``None``: the default TTL)."""
        return cls(redis_url=url, max_queue_depth=max_queue_depth,
                   result_ttl_s=DEFAULT_RESULT_TTL_S if result_ttl_s is None else result_ttl_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """Settings from ``REDIS_URL``, ``AIMASS_MAX_QUEUE_DEPTH`` and
        ``AIMASS_RESULT_TTL_S``; unset or empty variables keep their defaults."""
        env = os.environ if environ is None else environ
        return cls(
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            max_queue_depth=_int(env, "AIMASS_MAX_QUEUE_DEPTH", DEFAULT_MAX_QUEUE_DEPTH),
            result_ttl_s=_int(env, "AIMASS_RESULT_TTL_S", DEFAULT_RESULT_TTL_S),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number") from None
