"""Publishing into the model repository: next version, atomic appearance, clean failure."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aimass.export.errors import InvalidModelNameError
from aimass.export.repository import latest, publish_version, sha256_of
from aimass.protocol.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    ModelKind,
    TensorSpec,
    published_models,
    published_versions,
    resolve_repository,
)

pytestmark = pytest.mark.export

FIELDS: dict[str, Any] = {
    "kind": ModelKind.classify,
    "inputs": [TensorSpec(name="image", dtype="float32", shape=[-1, 2])],
    "outputs": [TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2])],
    "quality": {"test_accuracy": 1.0},
}


def test_second_version_appears_beside_the_first(tmp_path: Path) -> None:
    first = publish_version(tmp_path, "demo", b"one", FIELDS)
    second = publish_version(tmp_path, "demo", b"two" * 1000, FIELDS)

    assert (first.manifest.version, second.manifest.version) == (1, 2)
    assert published_versions(tmp_path, "demo") == [1, 2]
    assert sorted(entry.name for entry in (tmp_path / "demo").iterdir()) == ["1", "2"]
    assert (tmp_path / "demo" / "1" / MODEL_FILE).read_bytes() == b"one"
    manifest = Manifest.read(tmp_path / "demo" / "2")
    assert manifest.sha256 == sha256_of(tmp_path / "demo" / "2" / MODEL_FILE)
    assert manifest.created_at and manifest.created_at.endswith("+00:00")
    assert latest(tmp_path, "demo") == second
    assert published_models(tmp_path) == ["demo"]


def test_a_reader_never_sees_a_partial_version(tmp_path: Path) -> None:
    publish_version(tmp_path, "demo", b"seed", FIELDS)
    stop = threading.Event()
    problems: list[str] = []

    def read_continuously() -> None:
        while not stop.is_set():
            for version in published_versions(tmp_path, "demo"):
                folder = tmp_path / "demo" / str(version)
                if not (folder / MODEL_FILE).is_file() or not (folder / MANIFEST_FILE).is_file():
                    problems.append(f"version {version} listed before its files")
                else:
                    Manifest.read(folder)  # complete and valid

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for _ in range(20):
            publish_version(tmp_path, "demo", b"x" * 200_000, FIELDS)
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert published_versions(tmp_path, "demo") == list(range(1, 22))


def test_concurrent_publishers_take_distinct_versions(tmp_path: Path) -> None:
    threads = [
        threading.Thread(target=publish_version, args=(tmp_path, "demo", bytes([n]), FIELDS))
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert published_versions(tmp_path, "demo") == list(range(1, 9))
    contents = {(tmp_path / "demo" / str(v) / MODEL_FILE).read_bytes() for v in range(1, 9)}
    assert contents == {bytes([n]) for n in range(8)}


def test_a_numbered_folder_not_yet_published_is_never_written_into(tmp_path: Path) -> None:
    publish_version(tmp_path, "demo", b"one", FIELDS)
    half = tmp_path / "demo" / "2"  # someone else's version, its manifest not yet written
    half.mkdir()
    (half / MODEL_FILE).write_bytes(b"theirs")
    empty = tmp_path / "demo" / "3"
    empty.mkdir()

    assert published_versions(tmp_path, "demo") == [1]
    newest = latest(tmp_path, "demo")
    assert newest is not None and newest.manifest.version == 1
    assert publish_version(tmp_path, "demo", b"mine", FIELDS).manifest.version == 4
    assert (half / MODEL_FILE).read_bytes() == b"theirs" and not (half / MANIFEST_FILE).exists()
    assert list(empty.iterdir()) == []
    assert published_versions(tmp_path, "demo") == [1, 4]


def test_no_temporary_folder_is_left_behind(tmp_path: Path) -> None:
    publish_version(tmp_path, "demo", b"one", FIELDS)
    with pytest.raises(ValueError, match="kind"):
        publish_version(tmp_path, "demo", b"two", {**FIELDS, "kind": "translate"})
    assert sorted(entry.name for entry in (tmp_path / "demo").iterdir()) == ["1"]


def test_a_published_version_is_readable_by_others(tmp_path: Path) -> None:
    published = publish_version(tmp_path, "demo", b"one", FIELDS)
    assert published.folder.stat().st_mode & 0o755 == 0o755


@pytest.mark.parametrize("name", ["", "Digits", "../escape", "a/b", ".hidden", "x" * 65])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidModelNameError, match="invalid model name"):
        publish_version(tmp_path, name, b"one", FIELDS)
    assert list(tmp_path.iterdir()) == []


def test_repository_comes_from_flag_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMASS_MODEL_REPOSITORY", "/from/env")
    assert resolve_repository("/from/flag") == Path("/from/flag")
    assert resolve_repository(None) == Path("/from/env")
    monkeypatch.delenv("AIMASS_MODEL_REPOSITORY")
    assert resolve_repository(None) == Path("models")


def test_staging_left_by_a_killed_publisher_is_cleared(tmp_path: Path) -> None:
    publish_version(tmp_path, "demo", b"one", FIELDS)
    stale = tmp_path / "demo" / ".incoming-killed"
    fresh = tmp_path / "demo" / ".incoming-busy"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / MODEL_FILE).write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    publish_version(tmp_path, "demo", b"two", FIELDS)

    assert not stale.exists()
    assert fresh.exists()  # may belong to a publisher still at work
    assert published_versions(tmp_path, "demo") == [1, 2]
