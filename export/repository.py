"""The model repository on disk: where it is, which versions it holds, and publishing a
new version atomically.

``<repository>/<name>/<version>/{model.onnx,manifest.json}`` (the layout rule, shared
with the workers, is in ``aimass.protocol.manifest``). A version is written in a hidden
folder next to the versions (its name starts with a dot, and readers skip every name
that is not a number), flushed to disk, then renamed into place: a worker listing the
versions sees either no new version or a complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aimass.export.errors import InvalidModelNameError
from aimass.protocol.manifest import (
    MODEL_FILE,
    Manifest,
    is_valid_model_name,
    published_versions,
    taken_versions,
    version_folder,
)

# How export steps report progress: a line for the user.
Progress = Callable[[str], None]

_TEMPORARY_PREFIX = ".incoming-"
_RENAME_ATTEMPTS = 20  # each lost race with another publisher moves on to the next number
# A staging folder lives for the seconds it takes to write one model; one this old was
# left by a publisher that was killed.
_STALE_STAGING_SECONDS = 3600


@dataclass(frozen=True)
class PublishedModel:
    manifest: Manifest
    folder: Path


def check_model_name(name: str) -> None:
    if not is_valid_model_name(name):
        raise InvalidModelNameError(
            f"invalid model name {name!r}: expected 1-64 characters of lowercase letters, "
            "digits, '_', '.' and '-', starting with a letter or digit (it becomes a folder "
            "and a queue name)"
        )


def latest(repository: Path, name: str) -> PublishedModel | None:
    """The newest published version of ``name``, or None."""
    versions = published_versions(repository, name)
    if not versions:
        return None
    folder = version_folder(repository, name, versions[-1])
    return PublishedModel(Manifest.read(folder), folder)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_version(
    repository: Path, name: str, model_bytes: bytes, fields: Mapping[str, Any]
) -> PublishedModel:
    """Write ``model_bytes`` and a manifest as the next version of ``name``, atomically.

    ``fields`` are the manifest's fields other than name, version, sha256 and created_at,
    which this function fills in. The manifest is validated before anything becomes
    visible. If another publisher takes the same version number first, the next number
    is used.
    """
    check_model_name(name)
    model_folder = repository / name
    model_folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(model_folder)
    staging = Path(tempfile.mkdtemp(prefix=_TEMPORARY_PREFIX, dir=model_folder))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the version from a worker's user
        _write_synced(staging / MODEL_FILE, model_bytes)
        digest = hashlib.sha256(model_bytes).hexdigest()
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        for _ in range(_RENAME_ATTEMPTS):
            # Above every numbered folder, published or not: never into one still
            # being written (or left broken) by someone else.
            version = max(taken_versions(repository, name), default=0) + 1
            manifest = Manifest.model_validate(
                {
                    **fields,
                    "name": name,
                    "version": version,
                    "sha256": digest,
                    "created_at": created_at,
                }
            )
            _fsync(manifest.write(staging))
            target = version_folder(repository, name, version)
            try:
                os.rename(staging, target)  # atomic; fails if the version already exists
            except OSError:
                if target.exists():
                    continue  # another publisher won this number
                raise
            _fsync(model_folder)
            return PublishedModel(manifest, target)
        raise RuntimeError(
            f"could not publish {name}: {_RENAME_ATTEMPTS} version numbers were taken by "
            "concurrent publishers; try again"
        )
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(model_folder: Path) -> None:
    cutoff = time.time() - _STALE_STAGING_SECONDS
    for entry in model_folder.glob(f"{_TEMPORARY_PREFIX}*"):
        with contextlib.suppress(OSError):  # another publisher may be removing it too
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (so a rename never outlives its contents)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
