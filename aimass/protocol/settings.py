"""Settings: built once at start-up from the environment, checked there, passed in.

``ClientSettings`` is what a producer needs. The worker's settings
(``aimass.worker.settings``) follow the same rules, defined here in the contract that
both import: each field carries a :class:`Rule` (the
variable that sets it, a pydantic type that reads and checks a value, the words for an
error), and a bad value raises :class:`SettingsError` with one line that names the
variable, the value and what is expected. ``aimass`` prints that line and exits 2.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError

from aimass.protocol.connections import cluster_nodes, is_cluster, sentinel_target
from aimass.protocol.keys import DEFAULT_RESULT_TTL_S

logger = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Jobs a model's queue may hold before submit raises QueueFull.
DEFAULT_MAX_QUEUE_DEPTH = 10_000

PREFIX = "AIMASS_"

# How a run of the tests is asked for (.ci/run sets AIMASS_CLUSTER_TESTS=required): the
# test harness keeps these when it clears every other AIMASS_* variable (tests/conftest.py).
TEST_RUN_VARIABLES = frozenset(
    {"AIMASS_FUZZ_EXAMPLES", "AIMASS_SOAK_SECONDS", "AIMASS_SOAK_RATE", "AIMASS_CLUSTER_TESTS"}
)

# Every AIMASS_ variable that aimass, its deployment files or its tests read on purpose:
# one list for both sides, so that a variable set for the workers does not alarm a
# producer that shares their environment, and anything else is reported as a likely typo.
KNOWN_VARIABLES = frozenset(
    {
        # The worker's settings (aimass.worker.settings).
        "AIMASS_DEVICES",
        "AIMASS_MODELS",
        "AIMASS_MAX_BATCH_SIZE",
        "AIMASS_MAX_QUEUE_DELAY_MS",
        "AIMASS_BATCH_BUCKETS",
        "AIMASS_BATCH_SWEEP",
        "AIMASS_PROCS_PER_GPU",
        "AIMASS_ALLOW_CPU_FALLBACK",
        "AIMASS_CONCURRENCY",
        "AIMASS_CONSUMER",
        "AIMASS_IDLE_POLL_MS",
        "AIMASS_VISIBILITY_TIMEOUT_S",
        "AIMASS_JOB_TIME_LIMIT_S",
        "AIMASS_MAX_PAYLOAD_BYTES",
        "AIMASS_MAX_IMAGE_PIXELS",
        "AIMASS_MAX_MESSAGE_BYTES",
        "AIMASS_INTRA_OP_THREADS",
        "AIMASS_TENSORRT",
        "AIMASS_TENSORRT_CACHE",
        "AIMASS_METRICS_PORT",
        "AIMASS_RELOAD_INTERVAL_S",
        "AIMASS_LOG_LEVEL",
        "AIMASS_LOG_FORMAT",
        "AIMASS_MAX_DELIVERIES",
        "AIMASS_COUNT_RUNS_AT",
        "AIMASS_MOVE_TAKES_AT",
        "AIMASS_MAX_RESULT_BYTES",
        "AIMASS_TRACK_STARTED",
        "AIMASS_MAX_SEQUENCES",
        "AIMASS_SEQUENCE_BATCHING",
        # Both sides: the producer's settings (ClientSettings) and every command's repository.
        "AIMASS_RESULT_TTL_S",
        "AIMASS_MAX_QUEUE_DEPTH",
        "AIMASS_QUEUE_SHARDS",
        "AIMASS_MODEL_REPOSITORY",
        # docker-compose.yml's own.
        "AIMASS_REDIS_PORT",
        "AIMASS_FLOWER_PORT",
        "AIMASS_WORKDIR",
        "AIMASS_REDIS_MAXMEMORY",
        "AIMASS_REDIS_URL",
        # The benchmark's one-process baseline (aimass/bench/naive.py).
        "AIMASS_BENCH_MODEL_FILE",
        "AIMASS_BENCH_PROVIDER",
        # The tests' own: set by tests for the workers they start, and how a run is asked for.
        "AIMASS_TEST_SHAPE_LOG",
        "AIMASS_TEST_STICKY_TRIGGER",
        *TEST_RUN_VARIABLES,
    }
)


class SettingsError(ValueError):
    """A setting with a value it cannot take. The message is one line that starts with
    what was given (``AIMASS_CONCURRENCY='-3'``, or the field for a value given in code)
    and says what is expected instead."""


@dataclass(frozen=True, eq=False)
class Rule:
    """How one setting is given and checked.

    ``name`` is the environment variable that sets it (or, for a setting that only the
    command line gives, its flag); ``kind`` is a pydantic type that reads a string or
    checks a value; an error reads "NAME='x' is not a valid <noun>: expected <expected>".
    """

    name: str
    kind: Any
    noun: str
    expected: str

    @property
    def in_environment(self) -> bool:
        return not self.name.startswith("-")

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.kind)

    def read(self, value: object) -> Any:
        """``value`` (a variable's text, or a flag's value) as the setting holds it."""
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            raise SettingsError(
                f"{self.name}={_hide_password(repr(text))} is not "
                f"{_complaint(exc, self.noun)}: expected {self.expected}"
            ) from None


def _complaint(exc: ValidationError, noun: str) -> str:
    """What is wrong: not even a number, or not one that the setting takes (and for a
    list, which item)."""
    error = exc.errors()[0]
    if error["type"] in ("int_parsing", "int_from_float", "int_type"):
        return "a whole number"
    if error["type"] in ("float_parsing", "float_type"):
        return "a number"
    if error["loc"] and error["type"] == "value_error":
        return f"a valid {noun} ({error['ctx']['error']})"
    return f"a valid {noun}"


def _hide_password(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***``."""
    return re.sub(r"(://[^@:/]*:)[^@]*@", r"\1***@", text)


def checked(name: str, kind: Any, noun: str, expected: str) -> dict[str, Rule]:
    """The metadata of a settings dataclass field, given and checked by this rule:
    ``field(default=..., metadata=checked(...))``."""
    return {"rule": Rule(name, kind, noun, expected)}


def rules(settings_class: type) -> dict[str, Rule]:
    """Each field's rule, by field name."""
    return {f.name: f.metadata["rule"] for f in fields(settings_class)}


def read_environment(settings_class: type, environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields that ``environ`` sets, read and checked; unset or empty variables are
    left out, so that their fields keep their defaults."""
    values: dict[str, Any] = {}
    for name, rule in rules(settings_class).items():
        text = environ.get(rule.name, "").strip() if rule.in_environment else ""
        if text:
            values[name] = rule.read(text)
    return values


def check_changes(settings_class: type, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Values from the command line, checked like the variables they stand for."""
    known = rules(settings_class)
    unknown = set(changes) - set(known)
    if unknown:
        raise TypeError(f"{settings_class.__name__} has no setting {sorted(unknown)[0]!r}")
    return {name: known[name].read(value) for name, value in changes.items()}


def check_fields(settings: Any) -> None:
    """Check every field of a settings dataclass (from its ``__post_init__``) and keep each
    value as its rule reads it. A value given in code is named by its field."""
    for f in fields(settings):
        rule: Rule = f.metadata["rule"]
        value = getattr(settings, f.name)
        try:
            normalized = rule.adapter.validate_python(value)
        except ValidationError:
            raise SettingsError(
                f"{f.name} must be {rule.expected}, got {_hide_password(repr(value))}"
            ) from None
        object.__setattr__(settings, f.name, normalized)  # frozen: the one write, at creation


# Unknown variables already reported by this process: each is reported once.
_reported: set[str] = set()


def warn_unknown_variables(environ: Mapping[str, str]) -> None:
    """Log a warning for each ``AIMASS_`` variable (in any case) that aimass does not read,
    with the known one it most likely stands for."""
    for name in sorted(environ):
        if not name.upper().startswith(PREFIX) or name in KNOWN_VARIABLES | _reported:
            continue
        _reported.add(name)
        suffixes = [known.removeprefix(PREFIX) for known in KNOWN_VARIABLES]
        close = difflib.get_close_matches(name.upper().removeprefix(PREFIX), suffixes, n=1)
        hint = f"; did you mean {PREFIX}{close[0]}?" if close else ""
        logger.warning("%s is not a variable aimass reads, so it is ignored%s", name, hint)


# Value types shared by both sides' settings.


def _redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        port = parts.port  # raises ValueError for one that is not a number up to 65535
        if parts.hostname and port != 0 and re.fullmatch(r"/?[0-9]*", parts.path):
            return url
    elif (parts.scheme == "unix" and parts.path.strip("/")) or sentinel_target(url) is not None:
        return url
    elif is_cluster(url) and parts.path.strip("/") in ("", "0"):
        cluster_nodes(url)  # raises for a host list it cannot read
        return url
    raise ValueError("not a Redis URL")


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
FLAG_WORDS = "1, true, yes, on or 0, false, no, off"


def _flag(value: object) -> object:
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected {FLAG_WORDS}")


RedisUrl = Annotated[str, AfterValidator(_redis_url)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Count = Annotated[int, Field(ge=1)]  # counts, sizes and TTLs, where 0 makes no sense
CountOrOff = Annotated[int, Field(ge=0)]  # 0 turns something off or leaves it to aimass
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: off
Duration = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # 0: off
PositiveDuration = Annotated[float, Field(gt=0, allow_inf_nan=False)]

# The fields that both sides' settings have.
REDIS_URL = checked(
    "REDIS_URL",
    RedisUrl,
    "Redis URL",
    "a redis://, rediss:// or unix:// URL such as redis://host:6379/0, or a "
    "Sentinel set's: redis+sentinel://host:26379,host:26379/service/0, or a Redis "
    "Cluster's: redis+cluster://host:6379,host:6379/",
)
# On a Redis Cluster: how many shards each model's queue has (0: as many as the cluster
# has primaries). Recorded in the cluster by the first party to use it; a different
# number given later is refused (aimass.protocol.shards).
QUEUE_SHARDS = checked(
    "AIMASS_QUEUE_SHARDS", CountOrOff, "shard count", "0 (one per primary) or positive"
)
RESULT_TTL_S = checked(
    "AIMASS_RESULT_TTL_S", Count, "time to live", "a whole number of seconds, at least 1"
)


@dataclass(frozen=True)
class ClientSettings:
    """What a producer needs to know: where Redis is and the limits it keeps."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, metadata=REDIS_URL)
    # Soft bound on a model's queued jobs (all priorities), checked at submit; 0: none.
    max_queue_depth: int = field(
        default=DEFAULT_MAX_QUEUE_DEPTH,
        metadata=checked(
            "AIMASS_MAX_QUEUE_DEPTH", CountOrOff, "queue depth", "0 (no bound) or positive"
        ),
    )
    # How long submission markers live; match the workers' AIMASS_RESULT_TTL_S.
    result_ttl_s: int = field(default=DEFAULT_RESULT_TTL_S, metadata=RESULT_TTL_S)
    queue_shards: int = field(default=0, metadata=QUEUE_SHARDS)

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def for_url(
        cls,
        url: str,
        max_queue_depth: int = DEFAULT_MAX_QUEUE_DEPTH,
        result_ttl_s: int | None = None,
        queue_shards: int = 0,
    ) -> ClientSettings:
        """Settings given as a client's arguments (``None``: the default TTL)."""
        return cls(
            redis_url=url,
            max_queue_depth=max_queue_depth,
            result_ttl_s=DEFAULT_RESULT_TTL_S if result_ttl_s is None else result_ttl_s,
            queue_shards=queue_shards,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """Settings from ``REDIS_URL``, ``AIMASS_MAX_QUEUE_DEPTH`` and
        ``AIMASS_RESULT_TTL_S``; unset or empty variables keep their defaults."""
        env = os.environ if environ is None else environ
        warn_unknown_variables(env)
        return cls(**read_environment(cls, env))
