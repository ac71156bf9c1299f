"""The repository layout rule that the workers and the exporter share: a version is a
plainly numbered folder holding both model.onnx and manifest.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimass.protocol.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    published_models,
    published_versions,
    taken_versions,
    version_number,
)
from aimass.worker.repository import ModelRepository

pytestmark = pytest.mark.unit


def folder(root: Path, path: str, *files: str) -> Path:
    """Make ``root/path`` holding ``files`` (empty ones: the rule looks at names only)."""
    made = root / path
    made.mkdir(parents=True)
    for name in files:
        (made / name).write_bytes(b"")
    return made


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("1", 1),
        ("12", 12),
        ("0", None),
        ("01", None),
        ("-1", None),
        ("+1", None),
        ("1.0", None),
        (" 1", None),
        ("²", None),
        ("٣", None),
        (".incoming-x1", None),
        ("latest", None),
        ("", None),
    ],
)
def test_only_plainly_written_positive_numbers_name_a_version(
    entry: str, expected: int | None
) -> None:
    assert version_number(entry) == expected


def test_a_version_needs_both_files(tmp_path: Path) -> None:
    folder(tmp_path, "demo/1", MODEL_FILE, MANIFEST_FILE)
    folder(tmp_path, "demo/2", MANIFEST_FILE)  # the model file is missing
    folder(tmp_path, "demo/3", MODEL_FILE)  # the manifest is missing
    folder(tmp_path, "demo/4")
    folder(tmp_path, "demo/6", MODEL_FILE, MANIFEST_FILE)
    assert published_versions(tmp_path, "demo") == [1, 6]
    assert taken_versions(tmp_path, "demo") == [1, 2, 3, 4, 6]


def test_other_names_are_neither_published_nor_taken(tmp_path: Path) -> None:
    for name in (".incoming-abc", "latest", "07", "0", "v2"):
        folder(tmp_path, f"demo/{name}", MODEL_FILE, MANIFEST_FILE)
    (tmp_path / "demo" / "5").write_bytes(b"")  # a file, not a folder: its number is taken
    assert published_versions(tmp_path, "demo") == []
    assert taken_versions(tmp_path, "demo") == [5]


def test_versions_sort_as_numbers(tmp_path: Path) -> None:
    for version in (10, 9, 2):
        folder(tmp_path, f"demo/{version}", MODEL_FILE, MANIFEST_FILE)
    assert published_versions(tmp_path, "demo") == [2, 9, 10]


def test_a_model_is_a_valid_name_with_a_published_version(tmp_path: Path) -> None:
    folder(tmp_path, "digits/1", MODEL_FILE, MANIFEST_FILE)
    folder(tmp_path, "alexnet/2", MODEL_FILE, MANIFEST_FILE)
    folder(tmp_path, "half/1", MODEL_FILE)
    folder(tmp_path, "Upper/1", MODEL_FILE, MANIFEST_FILE)
    folder(tmp_path, ".hidden/1", MODEL_FILE, MANIFEST_FILE)
    (tmp_path / "notes.txt").write_text("not a model")
    assert published_models(tmp_path) == ["alexnet", "digits"]


def test_a_missing_repository_or_model_has_nothing(tmp_path: Path) -> None:
    assert published_models(tmp_path / "absent") == []
    assert published_versions(tmp_path / "absent", "demo") == []
    assert published_versions(tmp_path, "demo") == []
    assert taken_versions(tmp_path, "demo") == []


def test_the_worker_reads_by_the_same_rule(tmp_path: Path) -> None:
    folder(tmp_path, "demo/1", MODEL_FILE, MANIFEST_FILE)
    folder(tmp_path, "demo/2", MANIFEST_FILE)
    folder(tmp_path, "demo/03", MODEL_FILE, MANIFEST_FILE)
    folder(tmp_path, "half/1", MODEL_FILE)
    repository = ModelRepository(tmp_path)
    assert repository.names() == published_models(tmp_path) == ["demo"]
    assert repository.versions("demo") == published_versions(tmp_path, "demo") == [1]
