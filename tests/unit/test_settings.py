"""Settings fail fast: every variable has a type and a range, checked at start-up."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from aimass.protocol.settings import KNOWN_VARIABLES, ClientSettings, SettingsError, rules
from aimass.worker.settings import WorkerSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
A_FILE = str(Path(__file__).resolve())  # where a folder is expected

# (settings class, field, variable or flag, a value it must refuse): every field of both
# classes at least once (test_every_field_has_a_bad_value_below checks).
BAD_VALUES: list[tuple[type, str, str, str]] = [
    (WorkerSettings, "redis_url", "REDIS_URL", "localhost:6379"),
    (WorkerSettings, "redis_url", "REDIS_URL", "http://h:6379/0"),
    (WorkerSettings, "redis_url", "REDIS_URL", "redis://h:99999/0"),
    (WorkerSettings, "redis_url", "REDIS_URL", "redis://h:6379/first"),
    (WorkerSettings, "model_repository", "AIMASS_MODEL_REPOSITORY", A_FILE),
    (WorkerSettings, "devices", "AIMASS_DEVICES", "gpu0"),
    (WorkerSettings, "devices", "AIMASS_DEVICES", "0,-1"),
    (WorkerSettings, "devices", "AIMASS_DEVICES", "cpu,0"),
    (WorkerSettings, "models", "AIMASS_MODELS", "tiny,../etc"),
    (WorkerSettings, "models", "AIMASS_MODELS", "Tiny"),
    (WorkerSettings, "max_batch_size", "AIMASS_MAX_BATCH_SIZE", "0"),
    (WorkerSettings, "max_batch_size", "AIMASS_MAX_BATCH_SIZE", "many"),
    (WorkerSettings, "max_batch_size", "AIMASS_MAX_BATCH_SIZE", "digits=0"),
    (WorkerSettings, "max_batch_size", "AIMASS_MAX_BATCH_SIZE", "Not A Model=4"),
    (WorkerSettings, "batch_sweep", "AIMASS_BATCH_SWEEP", "sometimes"),
    (WorkerSettings, "max_queue_delay_ms", "AIMASS_MAX_QUEUE_DELAY_MS", "-1"),
    (WorkerSettings, "max_queue_delay_ms", "AIMASS_MAX_QUEUE_DELAY_MS", "soon"),
    (WorkerSettings, "batch_buckets", "AIMASS_BATCH_BUCKETS", "sometimes"),
    (WorkerSettings, "batch_buckets", "AIMASS_BATCH_BUCKETS", "4,0"),
    (WorkerSettings, "procs_per_gpu", "AIMASS_PROCS_PER_GPU", "-2"),
    (WorkerSettings, "allow_cpu_fallback", "AIMASS_ALLOW_CPU_FALLBACK", "maybe"),
    (WorkerSettings, "concurrency", "AIMASS_CONCURRENCY", "-3"),
    (WorkerSettings, "concurrency", "AIMASS_CONCURRENCY", "0"),
    (WorkerSettings, "concurrency", "AIMASS_CONCURRENCY", "many"),
    (WorkerSettings, "concurrency", "AIMASS_CONCURRENCY", "2.5"),
    (WorkerSettings, "consumer", "AIMASS_CONSUMER", "blk"),
    (WorkerSettings, "idle_poll_ms", "AIMASS_IDLE_POLL_MS", "0"),
    (WorkerSettings, "visibility_timeout_s", "AIMASS_VISIBILITY_TIMEOUT_S", "0"),
    (WorkerSettings, "job_time_limit_s", "AIMASS_JOB_TIME_LIMIT_S", "-1"),
    (WorkerSettings, "job_time_limit_s", "AIMASS_JOB_TIME_LIMIT_S", "inf"),
    (WorkerSettings, "result_ttl_s", "AIMASS_RESULT_TTL_S", "0"),
    (WorkerSettings, "max_payload_bytes", "AIMASS_MAX_PAYLOAD_BYTES", "16MB"),
    (WorkerSettings, "max_image_pixels", "AIMASS_MAX_IMAGE_PIXELS", "-1"),
    (WorkerSettings, "max_message_bytes", "AIMASS_MAX_MESSAGE_BYTES", "0"),
    (WorkerSettings, "intra_op_threads", "AIMASS_INTRA_OP_THREADS", "-1"),
    (WorkerSettings, "tensorrt", "AIMASS_TENSORRT", "2"),
    (WorkerSettings, "track_started", "AIMASS_TRACK_STARTED", "sometimes"),
    (WorkerSettings, "max_sequences", "AIMASS_MAX_SEQUENCES", "0"),
    (WorkerSettings, "sequence_batching", "AIMASS_SEQUENCE_BATCHING", "sometimes"),
    (WorkerSettings, "tensorrt_cache", "AIMASS_TENSORRT_CACHE", A_FILE),
    (WorkerSettings, "metrics_port", "AIMASS_METRICS_PORT", "65536"),
    (WorkerSettings, "metrics_port", "AIMASS_METRICS_PORT", "-1"),
    (WorkerSettings, "reload_interval_s", "AIMASS_RELOAD_INTERVAL_S", "-0.5"),
    (WorkerSettings, "log_level", "AIMASS_LOG_LEVEL", "loud"),
    (WorkerSettings, "log_format", "AIMASS_LOG_FORMAT", "yaml"),
    (WorkerSettings, "max_deliveries", "AIMASS_MAX_DELIVERIES", "-1"),
    (WorkerSettings, "count_runs_at", "AIMASS_COUNT_RUNS_AT", "finish"),
    (WorkerSettings, "move_takes_at", "AIMASS_MOVE_TAKES_AT", "many"),
    (WorkerSettings, "max_result_bytes", "AIMASS_MAX_RESULT_BYTES", "0"),
    (WorkerSettings, "hostname", "--hostname", "two words"),
    (WorkerSettings, "hostname", "--hostname", ""),
    (ClientSettings, "redis_url", "REDIS_URL", "memory://"),
    (ClientSettings, "max_queue_depth", "AIMASS_MAX_QUEUE_DEPTH", "-1"),
    (ClientSettings, "max_queue_depth", "AIMASS_MAX_QUEUE_DEPTH", "lots"),
    (ClientSettings, "queue_shards", "AIMASS_QUEUE_SHARDS", "-2"),
    (WorkerSettings, "queue_shards", "AIMASS_QUEUE_SHARDS", "some"),
    (WorkerSettings, "redis_url", "REDIS_URL", "redis+cluster://n1/"),
    (ClientSettings, "result_ttl_s", "AIMASS_RESULT_TTL_S", "0"),
]


@pytest.mark.parametrize("settings_class", [WorkerSettings, ClientSettings])
def test_every_field_has_a_bad_value_below(settings_class: type) -> None:
    tried = {name for cls, name, _, _ in BAD_VALUES if cls is settings_class}
    assert tried == {f.name for f in dataclasses.fields(settings_class)}


@pytest.mark.parametrize(
    ("settings_class", "field", "name", "bad"),
    BAD_VALUES,
    ids=[f"{case[2]}={case[3]!r}" for case in BAD_VALUES],
)
def test_a_bad_value_is_refused_in_one_line_naming_its_variable(
    settings_class: Any, field: str, name: str, bad: str
) -> None:
    def read() -> object:
        if name.startswith("--"):  # a flag: only the command line sets it
            return settings_class().override(**{field: bad})
        return settings_class.from_env({name: bad})

    with pytest.raises(SettingsError) as caught:
        read()
    message = str(caught.value)
    assert message.startswith(f"{name}={bad!r} is not a ")
    assert ": expected " in message and "\n" not in message
    if settings_class is WorkerSettings:  # the command line's values are checked alike
        with pytest.raises(SettingsError, match=f"^{re.escape(name)}={re.escape(repr(bad))} "):
            WorkerSettings().override(**{field: bad})
    with pytest.raises(SettingsError, match=f"^{field} must be "):  # and values from code
        settings_class(**{field: bad})


def test_the_message_says_what_is_expected() -> None:
    with pytest.raises(SettingsError) as caught:
        WorkerSettings.from_env({"AIMASS_CONCURRENCY": "-3"})
    assert str(caught.value) == (
        "AIMASS_CONCURRENCY='-3' is not a valid count: expected auto or a whole number of "
        "at least 1"
    )
    with pytest.raises(SettingsError) as caught:
        WorkerSettings.from_env({"AIMASS_CONCURRENCY": "many"})
    assert str(caught.value).startswith("AIMASS_CONCURRENCY='many' is not a whole number")
    with pytest.raises(
        SettingsError, match="'blk' is not a valid consumer: expected bulk or celery"
    ):
        WorkerSettings.from_env({"AIMASS_CONSUMER": "blk"})


def test_a_bad_model_name_is_named() -> None:
    with pytest.raises(
        SettingsError,
        match=r"^AIMASS_MODELS='tiny,\.\./etc' is not a valid "
        r"model list \('\.\./etc' is not a valid model name\)",
    ):
        WorkerSettings.from_env({"AIMASS_MODELS": "tiny,../etc"})


def test_a_redis_password_is_never_shown() -> None:
    url = "redis://:hunter2@h:99999/0"
    for read in (
        lambda: WorkerSettings.from_env({"REDIS_URL": url}),
        lambda: WorkerSettings().override(redis_url=url),
        lambda: ClientSettings.for_url(url),
    ):
        with pytest.raises(SettingsError) as caught:
            read()
        assert "hunter2" not in str(caught.value) and ":***@h:99999" in str(caught.value)


def test_unset_and_empty_variables_keep_the_defaults() -> None:
    assert WorkerSettings.from_env({}) == WorkerSettings()
    assert WorkerSettings.from_env({"AIMASS_CONCURRENCY": "", "AIMASS_DEVICES": " "}) == (
        WorkerSettings()
    )
    assert ClientSettings.from_env({"REDIS_URL": ""}) == ClientSettings()


def test_values_are_read_as_people_write_them() -> None:
    settings = WorkerSettings.from_env(
        {
            "AIMASS_CONSUMER": "Celery",
            "AIMASS_LOG_LEVEL": "debug",
            "AIMASS_DEVICES": " 1, 0,1",
            "AIMASS_MODELS": "tiny, tiny-gan,",
            "AIMASS_MAX_BATCH_SIZE": "None",
            "AIMASS_MAX_QUEUE_DELAY_MS": "0",
            "AIMASS_JOB_TIME_LIMIT_S": "0",
            "AIMASS_METRICS_PORT": "9100",
            "AIMASS_IDLE_POLL_MS": "2.5",
            "AIMASS_BATCH_BUCKETS": " ON ",
            "AIMASS_CONCURRENCY": " 8 ",
        }
    )
    assert (settings.consumer, settings.log_level, settings.devices) == ("celery", "DEBUG", "1,0")
    assert settings.models == ("tiny", "tiny-gan")
    assert settings.max_batch_size is None and settings.max_queue_delay_ms == 0.0
    assert settings.job_time_limit_s == 0.0 and settings.metrics_port == 9100
    assert settings.idle_poll_ms == 2.5 and settings.concurrency == 8
    assert settings.bucket_setting() == "on"
    assert WorkerSettings.from_env({"AIMASS_DEVICES": "CPU"}).devices == "cpu"


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:1/2",
        "redis://user:secret@h",
        "redis://h:6379/",
        "rediss://:secret@127.0.0.1:6380/0?ssl_cert_reqs=required",
        "unix:///run/redis.sock?db=1",
        "redis+cluster://n1:7000,n2:7001/",
    ],
)
def test_redis_urls_of_every_kind_are_accepted(url: str) -> None:
    assert WorkerSettings.from_env({"REDIS_URL": url}).redis_url == url
    assert ClientSettings.from_env({"REDIS_URL": url}).redis_url == url
    assert ClientSettings.for_url(url).redis_url == url


@pytest.mark.parametrize(
    ("word", "meaning"),
    [
        *[(word, True) for word in ("1", "true", "True", "TRUE", "yes", "Yes", "on", "ON", " on ")],
        *[(word, False) for word in ("0", "false", "False", "no", "NO", "off", "Off")],
    ],
)
def test_booleans_accept_what_people_write(word: str, meaning: bool) -> None:
    settings = WorkerSettings.from_env({"AIMASS_TENSORRT": word, "AIMASS_ALLOW_CPU_FALLBACK": word})
    assert settings.tensorrt is meaning and settings.allow_cpu_fallback is meaning


def test_overrides_apply_only_what_was_given_and_stay_frozen() -> None:
    base = WorkerSettings.from_env({"AIMASS_CONCURRENCY": "8", "AIMASS_MODELS": "tiny"})
    changed = base.override(concurrency=4, models=None, devices="CPU", log_level="warning")
    assert (changed.concurrency, changed.models) == (4, ("tiny",))
    assert (changed.devices, changed.log_level) == ("cpu", "WARNING")
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.concurrency = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="no setting 'concurency'"):
        base.override(concurency=2)


@pytest.mark.parametrize(
    ("flag", "value", "name"),
    [
        ("--concurrency", "0", "AIMASS_CONCURRENCY"),
        ("--metrics-port", "70000", "AIMASS_METRICS_PORT"),
        ("--devices", "gpu", "AIMASS_DEVICES"),
        ("--models", "../etc", "AIMASS_MODELS"),
        ("--loglevel", "loud", "AIMASS_LOG_LEVEL"),
        ("--procs-per-gpu", "-1", "AIMASS_PROCS_PER_GPU"),
        ("--batch-buckets", "0", "AIMASS_BATCH_BUCKETS"),
        ("--max-batch-size", "0", "AIMASS_MAX_BATCH_SIZE"),
        ("--max-queue-delay-ms", "-1", "AIMASS_MAX_QUEUE_DELAY_MS"),
        ("--repository", A_FILE, "AIMASS_MODEL_REPOSITORY"),
        ("--hostname", "two words", "--hostname"),
    ],
)
def test_command_line_flags_are_checked_like_their_variables(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    name: str,
) -> None:
    import aimass.worker.devices
    from aimass.cli import main

    def no_further(devices: str) -> None:
        raise AssertionError("the worker got past its settings")

    monkeypatch.setattr(aimass.worker.devices, "resolve_devices", no_further)
    for variable in [v for v in os.environ if v.upper().startswith("AIMASS_")]:
        monkeypatch.delenv(variable)  # only the flag can be wrong here
    assert main(["worker", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aimass: error: {name}=") and err.count("\n") == 1, err


def test_a_misspelt_variable_is_reported_with_the_nearest_known_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = WorkerSettings.from_env({"AIMASS_CONCURENCY": "8"})
        WorkerSettings.from_env({"AIMASS_CONCURENCY": "8"})  # once is enough
    assert settings.concurrency is None  # ignored, as the warning says: auto
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "AIMASS_CONCURENCY is not a variable aimass reads, so it "
        "is ignored; did you mean AIMASS_CONCURRENCY?"
    )


@pytest.mark.parametrize(
    ("settings_class", "name", "suggestion"),
    [
        (ClientSettings, "AIMASS_MAX_QUEUE_DEPT", "AIMASS_MAX_QUEUE_DEPTH"),
        (WorkerSettings, "aimass_log_level", "AIMASS_LOG_LEVEL"),
        (WorkerSettings, "AIMASS_TENSORTR", "AIMASS_TENSORRT"),
    ],
)
def test_typos_are_reported_on_either_side(
    caplog: pytest.LogCaptureFixture, settings_class: Any, name: str, suggestion: str
) -> None:
    with caplog.at_level(logging.WARNING):
        settings_class.from_env({name: "1"})
    [record] = caplog.records
    assert record.getMessage().startswith(f"{name} is not a variable aimass reads")
    assert record.getMessage().endswith(f"; did you mean {suggestion}?")


def test_a_name_like_nothing_known_is_reported_without_a_guess(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        ClientSettings.from_env({"AIMASS_XYZZY": "1"})
    assert [r.getMessage() for r in caplog.records] == [
        "AIMASS_XYZZY is not a variable aimass reads, so it is ignored"
    ]


def test_a_variable_for_one_side_or_the_tests_does_not_alarm_the_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        ClientSettings.from_env(
            {
                "AIMASS_CONCURRENCY": "8",
                "AIMASS_MODEL_REPOSITORY": "/m",
                "AIMASS_TEST_SHAPE_LOG": "/tmp/shapes",
                "REDIS_PORT": "1",
            }
        )
        WorkerSettings.from_env(
            {
                "AIMASS_MAX_QUEUE_DEPTH": "5",
                "AIMASS_SOAK_RATE": "9",
                "AIMASS_BENCH_PROVIDER": "cuda",
            }
        )
    assert caplog.records == []


def test_every_settings_variable_is_known() -> None:
    names = {
        rule.name
        for cls in (WorkerSettings, ClientSettings)
        for rule in rules(cls).values()
        if rule.name.startswith("AIMASS_")
    }
    assert names <= KNOWN_VARIABLES


def test_every_variable_the_tree_reads_is_known() -> None:
    """Code, deployment files, docs and tests: a new variable joins KNOWN_VARIABLES, or
    setting it would be reported as a typo."""
    places = [
        ROOT / name
        for name in (
            "producer",
            "worker",
            "export",
            "aimass/bench",
            "docker",
            "docs",
            "deploy",
            "tests",
            "docker-compose.yml",
            "README.md",
        )
    ]
    files = [*ROOT.glob("aimass/*.py")]
    for place in places:
        files += [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
    found: dict[str, Path] = {}
    for path in files:
        if path.resolve() == Path(A_FILE) or "__pycache__" in path.parts:
            continue  # this file names typos on purpose
        for match in re.findall(rb"AIMASS_[A-Z0-9_]*[A-Z0-9]", path.read_bytes()):
            found.setdefault(match.decode(), path)
    assert found, "no AIMASS_ variable found: is ROOT right?"
    unknown = {
        name: str(path.relative_to(ROOT))
        for name, path in found.items()
        if name not in KNOWN_VARIABLES
    }
    assert unknown == {}


def test_batch_limits_are_one_for_every_model_or_one_per_model() -> None:
    every = WorkerSettings.from_env({"AIMASS_MAX_BATCH_SIZE": "32"})
    assert (every.batch_limit("digits"), every.batch_limit("alexnet")) == (32, 32)
    each = WorkerSettings.from_env({"AIMASS_MAX_BATCH_SIZE": "digits=128, alexnet=64"})
    assert (each.batch_limit("digits"), each.batch_limit("alexnet")) == (128, 64)
    assert each.batch_limit("digits-gan") is None  # its manifest's own
    rest = WorkerSettings.from_env({"AIMASS_MAX_BATCH_SIZE": "*=8,digits=2"})
    assert (rest.batch_limit("digits"), rest.batch_limit("alexnet")) == (2, 8)
    assert WorkerSettings().override(max_batch_size="alexnet=4").batch_limit("alexnet") == 4
    assert WorkerSettings.from_env({"AIMASS_BATCH_SWEEP": " ON"}).batch_sweep == "on"


def test_client_settings_from_env_say_what_is_wrong() -> None:
    settings = ClientSettings.from_env(
        {"REDIS_URL": "redis://h:1/2", "AIMASS_MAX_QUEUE_DEPTH": "5"}
    )
    assert (settings.redis_url, settings.max_queue_depth) == ("redis://h:1/2", 5)
    assert ClientSettings.from_env({}).max_queue_depth == 10_000
    with pytest.raises(ValueError, match="AIMASS_MAX_QUEUE_DEPTH='lots' is not a whole"):
        ClientSettings.from_env({"AIMASS_MAX_QUEUE_DEPTH": "lots"})
    with pytest.raises(ValueError, match=r"max_queue_depth must be 0 .* or positive"):
        ClientSettings(max_queue_depth=-1)


def test_settings_come_from_the_given_environment_only() -> None:
    settings = WorkerSettings.from_env(
        {
            "REDIS_URL": "redis://h:1/2",
            "AIMASS_MODEL_REPOSITORY": "/m",
            "AIMASS_MAX_BATCH_SIZE": "32",
            "AIMASS_RESULT_TTL_S": "60",
            "AIMASS_MODELS": "a,b",
        }
    )
    assert settings.redis_url == "redis://h:1/2"
    assert settings.model_repository == Path("/m")
    assert settings.max_batch_size == 32 and settings.result_ttl_s == 60
    assert settings.models == ("a", "b")
    assert settings.override(max_batch_size=None, concurrency=4).max_batch_size == 32


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(ValueError, match="AIMASS_CONCURRENCY='many'"):
        WorkerSettings.from_env({"AIMASS_CONCURRENCY": "many"})


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("AIMASS_BATCH_BUCKETS", "sometimes", "auto, on, off, or sizes like 1,8,32"),
        ("AIMASS_BATCH_BUCKETS", "4,0", "auto, on, off, or sizes like 1,8,32"),
        ("AIMASS_PROCS_PER_GPU", "-2", "count"),
        ("AIMASS_ALLOW_CPU_FALLBACK", "maybe", "boolean"),
        ("AIMASS_TENSORRT", "True-ish", "boolean"),
    ],
)
def test_gpu_settings_refuse_bad_values_and_say_what_is_expected(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ValueError, match=f"{name}={value!r} is not a valid .*{expected}"):
        WorkerSettings.from_env({name: value})


def test_gpu_settings_accept_what_people_write() -> None:
    settings = WorkerSettings.from_env(
        {
            "AIMASS_BATCH_BUCKETS": "32, 1,8",
            "AIMASS_PROCS_PER_GPU": "4",
            "AIMASS_ALLOW_CPU_FALLBACK": "Yes",
            "AIMASS_TENSORRT": "True",
        }
    )
    assert settings.bucket_setting() == (1, 8, 32)
    assert settings.procs_per_gpu == 4
    assert settings.allow_cpu_fallback is True and settings.tensorrt is True
    defaults = WorkerSettings.from_env({})
    assert defaults.bucket_setting() == "auto" and defaults.procs_per_gpu == 0
    assert defaults.allow_cpu_fallback is False and defaults.tensorrt is False


def test_a_worker_holds_twice_its_largest_batch_unless_told_how_many() -> None:
    """AIMASS_CONCURRENCY=auto (the default): the next batch fills while one runs and is
    settled, whatever the models' batch limits; at least 64, as Celery's thread pool
    gets before the models are known."""
    auto = WorkerSettings()
    assert auto.concurrency is None
    assert WorkerSettings.from_env({"AIMASS_CONCURRENCY": " Auto "}) == auto
    assert auto.jobs_held() == 64
    assert auto.jobs_held([16]) == 64
    assert auto.jobs_held([64, 16]) == 128
    assert auto.jobs_held([256, 64]) == 512
    given = WorkerSettings.from_env({"AIMASS_CONCURRENCY": "8"})
    assert given.jobs_held([256]) == 8
    assert auto.override(concurrency="32").jobs_held([256]) == 32
