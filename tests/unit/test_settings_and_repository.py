from __future__ import annotations

from pathlib import Path

import pytest

from aimass.protocol.errors import ModelError, UnknownModel
from aimass.protocol.manifest import ModelKind
from aimass.worker.repository import ModelRepository, verify_checksum
from aimass.worker.settings import WorkerSettings
from tests.support.tiny_models import build_repository, classifier_model, publish

pytestmark = pytest.mark.unit


def test_settings_come_from_the_given_environment_only() -> None:
    settings = WorkerSettings.from_env({
        "REDIS_URL": "redis://h:1/2", "AIMASS_MODEL_REPOSITORY": "/m",
        "AIMASS_MAX_BATCH_SIZE": "32", "AIMASS_RESULT_TTL_S": "60", "AIMASS_MODELS": "a,b",
    })
    assert settings.redis_url == "redis://h:1/2"
    assert settings.model_repository == Path("/m")
    assert settings.max_batch_size == 32 and settings.result_ttl_s == 60
    assert settings.models == ("a", "b")
    assert settings.override(max_batch_size=None, concurrency=4).max_batch_size == 32


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(ValueError, match="AIMASS_CONCURRENCY='many'"):
        WorkerSettings.from_env({"AIMASS_CONCURRENCY": "many"})


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("AIMASS_BATCH_BUCKETS", "sometimes", "auto, on, off, or sizes like 1,8,32"),
    ("AIMASS_BATCH_BUCKETS", "4,0", "auto, on, off, or sizes like 1,8,32"),
    ("AIMASS_PROCS_PER_GPU", "-2", "count"),
    ("AIMASS_ALLOW_CPU_FALLBACK", "maybe", "boolean"),
    ("AIMASS_TENSORRT", "True-ish", "boolean"),
])
def test_gpu_settings_refuse_bad_values_and_say_what_is_expected(
        name: str, value: str, expected: str) -> None:
    with pytest.raises(ValueError, match=f"{name}={value!r} is not a valid .*{expected}"):
        WorkerSettings.from_env({name: value})


def test_gpu_settings_accept_what_people_write() -> None:
    settings = WorkerSettings.from_env({
        "AIMASS_BATCH_BUCKETS": "32, 1,8", "AIMASS_PROCS_PER_GPU": "4",
        "AIMASS_ALLOW_CPU_FALLBACK": "Yes", "AIMASS_TENSORRT": "True"})
    assert settings.bucket_setting() == (1, 8, 32)
    assert settings.procs_per_gpu == 4
    assert settings.allow_cpu_fallback is True and settings.tensorrt is True
    defaults = WorkerSettings.from_env({})
    assert defaults.bucket_setting() == "auto" and defaults.procs_per_gpu == 0
    assert defaults.allow_cpu_fallback is False and defaults.tensorrt is False


def test_repository_resolves_newest_and_pinned_versions(tmp_path: Path) -> None:
    build_repository(tmp_path)
    publish(tmp_path, "tiny", 2, ModelKind.classify, classifier_model(gain=2.0))
    (tmp_path / "tiny" / ".3-partial").mkdir()  # a publisher's work in progress
    repo = ModelRepository(tmp_path)
    assert repo.names() == ["tiny", "tiny-gan"]
    assert repo.versions("tiny") == [1, 2]
    assert repo.resolve("tiny").version == 2
    assert repo.resolve("tiny", 1).version == 1
    with pytest.raises(UnknownModel, match="has no version 7"):
        repo.resolve("tiny", 7)
    with pytest.raises(UnknownModel, match="no model named 'nope'"):
        repo.resolve("nope")


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "/abs", "Tiny", ""])
def test_model_names_cannot_leave_the_repository(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnknownModel, match="not a valid model name"):
        ModelRepository(tmp_path).resolve(name)


def test_damaged_model_file_is_detected(tmp_path: Path) -> None:
    build_repository(tmp_path)
    model = ModelRepository(tmp_path).resolve("tiny")
    model.model_file.write_bytes(b"corrupt")
    with pytest.raises(ModelError, match="is damaged"):
        verify_checksum(model)
