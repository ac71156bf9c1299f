"""The model repository as a worker reads it (the layout rule is in
``aimass.protocol.manifest``): ``<root>/<name>/<version>/model.onnx`` + ``manifest.json``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from aimass.protocol.errors import ModelError, UnknownModel
from aimass.protocol.manifest import (
    MODEL_FILE,
    VERSION_FILES,
    Manifest,
    is_valid_model_name,
    published_models,
    published_versions,
    version_folder,
)


@dataclass(frozen=True)
class ModelVersion:
    """One published version: its folder and its manifest."""

    folder: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def model_file(self) -> Path:
        return self.folder / MODEL_FILE


class ModelRepository:
    """Reads a Triton-style folder of models. Only published versions count (numbered
    folders holding both files); versions appear by an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        return published_models(self.root)

    def versions(self, name: str) -> list[int]:
        """Published versions of a model, oldest first."""
        self._check_name(name)
        return published_versions(self.root, name)

    def stamp(self, name: str, version: int) -> tuple[int, ...]:
        """Modification times and sizes of a version's files: changes when they do."""
        folder = self._folder(name, version)
        stamp: list[int] = []
        for path in (folder / file for file in VERSION_FILES):
            try:
                info = path.stat()
            except OSError:
                continue
            stamp += [info.st_mtime_ns, info.st_size]
        return tuple(stamp)

    def resolve(self, name: str, version: int | None = None) -> ModelVersion:
        """The given version, or the newest, of a model; ``UnknownModel`` when absent."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise UnknownModel(f"no model named {name!r} in the repository (models: {known})")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise UnknownModel(
                f"model {name!r} has no version {version} (versions: "
                f"{', '.join(map(str, versions))})"
            )
        return self.read(name, version)

    def read(self, name: str, version: int) -> ModelVersion:
        folder = self._folder(name, version)
        try:
            manifest = Manifest.read(folder)
        except (OSError, ValidationError, ValueError) as exc:
            raise ModelError(
                f"manifest of {name!r} version {version} is unreadable: {exc}"
            ) from None
        if manifest.name != name or manifest.version != version:
            raise ModelError(
                f"manifest in {name}/{version} says it is {manifest.name!r} version "
                f"{manifest.version}; expected {name!r} version {version}"
            )
        return ModelVersion(folder, manifest)

    def _folder(self, name: str, version: int) -> Path:
        self._check_name(name)
        return version_folder(self.root, name, version)

    @staticmethod
    def _check_name(name: str) -> None:
        """Refuse a name that is no model's before it becomes a path (no traversal)."""
        if not is_valid_model_name(name):
            raise UnknownModel(
                f"{name!r} is not a valid model name: expected lowercase letters, digits, "
                "'-', '_' or '.', starting with a letter or digit"
            )


def verify_checksum(model: ModelVersion) -> Path:
    """The model file's path, after checking its bytes against the manifest's sha256.

    Read in chunks, and the session is then created from the path: ONNX Runtime keeps
    a model passed as bytes alive for the session's life (measured here: AlexNet's
    worker held 238 MiB more that way)."""
    digest = hashlib.sha256()
    try:
        with model.model_file.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(
            f"model file of {model.name!r} v{model.version} is unreadable: {exc}"
        ) from None
    if digest.hexdigest() != model.manifest.sha256:
        raise ModelError(
            f"model file of {model.name!r} v{model.version} is damaged: sha256 "
            f"{digest.hexdigest()[:12]}..., manifest says {model.manifest.sha256[:12]}..."
        )
    return model.model_file
