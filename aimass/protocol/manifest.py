"""The model manifest: what a worker and a producer need to know about one model version.

A model repository is laid out like Triton's::

    <repository>/<name>/<version>/model.onnx
    <repository>/<name>/<version>/manifest.json

A version is published once its numbered folder holds both files (a publisher writes
them in a hidden folder and renames it into place). ``export`` writes manifests and
versions, ``worker`` reads them; both use these models and this layout rule so that the
two sides cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
VERSION_FILES = (MODEL_FILE, MANIFEST_FILE)  # what a published version's folder holds
MANIFEST_FORMAT = 1

# Model names become Redis queue names and folder names: keep them to a safe alphabet.
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_VERSION_RE = re.compile(r"[1-9][0-9]*")


REPOSITORY_ENV = "AIMASS_MODEL_REPOSITORY"
DEFAULT_REPOSITORY = Path("models")


def resolve_repository(flag: str | Path | None) -> Path:
    """The ``--repository`` flag, else ``$AIMASS_MODEL_REPOSITORY``, else ``./models``.

    Called when a command runs, never at import, so tests and callers can set the
    environment first.
    """
    if flag:
        return Path(flag)
    from_env = os.environ.get(REPOSITORY_ENV)
    return Path(from_env) if from_env else DEFAULT_REPOSITORY


def is_valid_model_name(name: str) -> bool:
    """True for names that are safe as a folder name and a queue suffix (no path traversal)."""
    return bool(_MODEL_NAME_RE.fullmatch(name)) and ".." not in name


def version_number(entry: str) -> int | None:
    """The version a folder name stands for: a positive decimal number written plainly
    ("3", not "03"); None for every other name (a publisher's hidden staging folder)."""
    return int(entry) if _VERSION_RE.fullmatch(entry) else None


def version_folder(root: Path, name: str, version: int) -> Path:
    """Where one version of a model lives: ``<root>/<name>/<version>``."""
    return root / name / str(version)


def taken_versions(root: Path, name: str) -> list[int]:
    """The version numbers in use under ``<root>/<name>``, ascending: published, still
    being written, or broken. A publisher numbers a new version above all of them."""
    folder = root / name
    if not folder.is_dir():
        return []
    return sorted(n for entry in folder.iterdir() if (n := version_number(entry.name)))


def published_versions(root: Path, name: str) -> list[int]:
    """The published versions of a model, ascending: numbered folders that hold both
    ``model.onnx`` and ``manifest.json``. The only versions a worker may serve."""
    return [
        version
        for version in taken_versions(root, name)
        if all((version_folder(root, name, version) / file).is_file() for file in VERSION_FILES)
    ]


def published_models(root: Path) -> list[str]:
    """The models of a repository, sorted: valid names with a published version."""
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if is_valid_model_name(entry.name) and published_versions(root, entry.name)
    )


class ModelKind(StrEnum):
    """What a model does, which also names its jobs: a model of each kind is served by
    one task (``aimass.classify``, ``aimass.generate``, ``aimass.infer``; see
    ``contract.task_name``). Every model also answers ``aimass.infer``: its tensors as
    they are, whatever its kind."""

    classify = "classify"  # a tensor (an image, a feature vector, token ids) in, top-k labels out
    generate = "generate"  # a latent vector (and a class or a condition vector) in, images out
    tensor = "tensor"  # any named tensors in, named tensors out (aimass.infer)
    sequence = "sequence"  # a prompt in, text out: decoded token by token (SequenceSpec)


class TensorSpec(BaseModel):
    """One named input or output of the ONNX graph; -1 marks a dimension left open.

    In a batched model (``Manifest.batched``) the first dimension is the batch one (-1);
    the others are fixed sizes or open ones (a sequence length)."""

    model_config = ConfigDict(frozen=True)

    name: str
    dtype: str  # numpy dtype name: "float32", "int32", "int64", "uint8", "bool", ...
    shape: list[int]
    # An integer input's values, where the export was told them (an embedding's
    # vocabulary): low inclusive, high exclusive. What the parity gate drew from.
    value_range: list[int] | None = None


class Preprocessing(BaseModel):
    """How an encoded image becomes the model's input tensor.

    The worker decodes the image, converts it to ``channels`` (1 = grayscale, 3 = RGB),
    resizes it to ``height`` x ``width``, then computes ``pixel * scale + offset`` per
    channel (``offset`` may hold one value or one per channel) and lays it out as
    ``layout`` with a leading batch dimension.
    """

    model_config = ConfigDict(frozen=True)

    height: int
    width: int
    channels: int = Field(ge=1, le=4)
    layout: str = "NHWC"  # or "NCHW"
    scale: float = 1.0 / 255.0
    offset: list[float] = Field(default_factory=lambda: [0.0])


class Postprocessing(BaseModel):
    """How a generator's output tensor becomes 8-bit pixels: ``pixel = value * scale + offset``."""

    model_config = ConfigDict(frozen=True)

    scale: float = 127.5
    offset: float = 127.5
    layout: str = "NHWC"


class GeneratorSpec(BaseModel):
    """What a generator takes besides its latent: a class label (``class_count`` classes,
    fed to ``label_input``), a condition vector (``condition_size`` numbers per image, fed
    to ``condition_input``), or nothing (an unconditional generator)."""

    model_config = ConfigDict(frozen=True)

    latent_size: int = Field(ge=1)
    class_count: int = Field(default=0, ge=0)  # 0: not class-conditioned
    latent_input: str = "latent"
    label_input: str | None = "label"
    condition_input: str | None = None
    condition_size: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _no_label_without_classes(cls, data: Any) -> Any:
        """A generator of no classes has no label input (the default name stays for the
        class-conditioned generators written before the field could be null)."""
        if isinstance(data, dict) and not data.get("class_count"):
            data = {**data, "label_input": None}
        return data

    @model_validator(mode="after")
    def _condition_has_a_size(self) -> GeneratorSpec:
        if (self.condition_input is None) != (self.condition_size == 0):
            raise ValueError("a condition input needs its condition_size, and only it")
        return self

    @property
    def class_conditioned(self) -> bool:
        return self.label_input is not None and self.class_count > 0


class SequenceState(BaseModel):
    """One tensor of a sequence model's state, carried from each decoding step to the next
    (a recurrent layer's state, or a transformer's key/value cache). A new sequence starts
    from zeros."""

    model_config = ConfigDict(frozen=True)

    input: str  # the graph input that takes it
    output: str  # the graph output that gives it for the next step
    shape: list[int]  # per sequence, without the batch dimension
    dtype: str = "float32"


class SequenceSpec(BaseModel):
    """How a sequence model decodes. Its graph is one decoding step: each sequence's last
    token (``token_input``, shape [batch]) and its state in; the next token's logits
    (``logits_output``, shape [batch, vocabulary]) and the new state out. A prompt is fed
    one token a step; then each step's sampled token is fed to the next."""

    model_config = ConfigDict(frozen=True)

    vocabulary: list[str]  # token id -> its text (one character each, character-level)
    token_input: str = "token"
    logits_output: str = "logits"
    state: list[SequenceState]
    start_token: int | None = None  # fed before the prompt; None: the prompt's first token
    end_token: int | None = None  # ends a sequence when it is sampled
    unknown_token: int | None = None  # stands for a prompt's text outside the vocabulary
    max_length: int | None = Field(default=None, ge=1)  # prompt and text, where bounded
    sample_prompt: str = ""  # what the export's sample was prompted with
    sample: str = ""  # text the model wrote at export, from sample_prompt


# A batch limit is the smallest batch size whose throughput is within this share of the
# best measured: past it a bigger batch only adds latency.
NEAR_BEST = 0.9


def near_best_batch(throughput: Mapping[int, float], near_best: float = NEAR_BEST) -> int:
    """The smallest batch size whose inputs/s (``throughput``, by batch size) is within
    ``near_best`` of the best one: the rule the export (on the CPU) and a GPU worker (on
    its own device, at start-up) choose a model's batch limit by."""
    best = max(throughput.values())
    return min(size for size, rate in throughput.items() if rate >= near_best * best)


class BatchingSpec(BaseModel):
    """Dynamic batching limits; a worker's settings may override them."""

    model_config = ConfigDict(frozen=True)

    # The limit on a CPU (the export measures it there).
    max_batch_size: int = Field(default=64, ge=1)
    # The limit on a GPU, where ONNX Runtime keeps gaining at far larger batches (AlexNet
    # up to 128 on an H200); None: a GPU worker measures it on its own device at
    # start-up (AIMASS_BATCH_SWEEP).
    max_batch_size_gpu: int | None = Field(default=None, ge=1)
    max_queue_delay_ms: float = Field(default=2.0, ge=0)
    # The batch sizes a GPU worker builds one session each for, padding every batch up to
    # the smallest that holds it (the max batch size is always one); None: powers of two
    # up to the max batch size. CPU workers run exact sizes unless told otherwise.
    buckets: list[Annotated[int, Field(ge=1)]] | None = None


class Source(BaseModel):
    """Where the ONNX file came from."""

    model_config = ConfigDict(frozen=True, extra="allow")

    framework: str = "tensorflow"
    tensorflow: str | None = None
    keras: str | None = None
    tf2onnx: str | None = None
    onnx_opset: int | None = None


class Manifest(BaseModel):
    """Everything about one published model version. Fields may be added, never renamed."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format: int = MANIFEST_FORMAT
    name: str
    version: int = Field(ge=1)
    kind: ModelKind
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing | None = None  # classifiers
    postprocessing: Postprocessing | None = None  # generators
    generator: GeneratorSpec | None = None  # generators
    sequence: SequenceSpec | None = None  # sequence models
    labels: list[str] = Field(default_factory=list)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    sha256: str
    source: Source = Field(default_factory=Source)
    parity_max_abs_error: float | None = None
    parity_tolerance: float | None = None
    quality: dict[str, Any] = Field(default_factory=dict)
    # Every input and output has a leading batch dimension, so that jobs run together;
    # False: the graph takes one job's tensors as they are, and runs one job per run.
    batched: bool = True
    # The parity tolerance of each output, where they differ (tensor models).
    output_tolerances: dict[str, float] = Field(default_factory=dict)
    trained: bool = True
    created_at: str | None = None

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        return cls.model_validate_json((folder / MANIFEST_FILE).read_bytes())
