"""The worker's model repository (aimass.worker.repository): newest and pinned versions,
names that stay inside it, damaged files detected."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimass.protocol.errors import ModelError, UnknownModel
from aimass.protocol.manifest import ModelKind
from aimass.worker.repository import ModelRepository, verify_checksum
from tests.support.tiny_models import build_repository, classifier_model, publish

pytestmark = pytest.mark.unit


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
