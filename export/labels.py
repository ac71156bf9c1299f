"""Class labels: read from a file (one per line) or generated as ``class_<index>``."""

from __future__ import annotations

from pathlib import Path

from aimass.export.errors import UnsupportedModelError


def default_labels(count: int) -> list[str]:
    return [f"class_{index}" for index in range(count)]


def read_labels(path: Path, expected_count: int) -> list[str]:
    """Non-empty lines of ``path``, stripped; there must be one per class."""
    try:
        labels = [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    except (OSError, UnicodeDecodeError) as error:
        raise UnsupportedModelError(
            f"could not read labels file {path}: {error}; expected a UTF-8 text file, "
            "one label per line"
        ) from error
    if len(labels) != expected_count:
        raise UnsupportedModelError(
            f"labels file {path} has {len(labels)} labels, but the model has {expected_count} "
            "classes; expected one non-empty line per class, in class-index order"
        )
    return labels
