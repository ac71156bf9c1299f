"""One served model version (its sessions, batcher and logic, warmed up), and a job
handed to it (``StartedJob``): what ``worker/served.py`` keeps and hands out."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from aimass.protocol.manifest import ModelKind
from aimass.worker.batcher import Batcher, BatchOutput
from aimass.worker.decoding import Decoder
from aimass.worker.infer import TensorModel
from aimass.worker.kinds import ModelLogic
from aimass.worker.repository import ModelVersion
from aimass.worker.sessions import CPU, SharedWeights


@dataclass
class ServedModel:
    """One model version with its session and its batcher, warmed up and ready."""

    version: ModelVersion
    logic: ModelLogic  # what the model's kind does with its jobs
    sessions: list[Any]  # one, or one per bucket
    batcher: Batcher
    providers: list[str]
    shared: SharedWeights | None = None  # the bucket sessions' one copy of the weights
    limit_source: str = "manifest"  # where the batch limit came from (BatchLimit.source)
    settled_ms: dict[int, float] = field(default_factory=dict)  # a run's time, by size
    # Infer jobs, which every model answers whatever its kind.
    tensors: TensorModel | None = None
    decoder: Decoder | None = None  # a sequence model's decoding loop (its jobs)

    def logic_of(self, kind: ModelKind) -> ModelLogic:
        """What runs a job of this kind on this model: its kind's logic, or for an infer
        job, its tensors as they are."""
        if kind is ModelKind.tensor:
            if self.tensors is None:
                self.tensors = TensorModel(self.version.manifest)
            return self.tensors
        return self.logic

    def describe(self) -> dict[str, Any]:
        shared = self.shared
        return {
            "name": self.version.name,
            "version": self.version.version,
            "kind": str(self.logic.kind),
            "batched": self.version.manifest.batched,
            "providers": self.providers,
            "max_batch_size": self.batcher.max_batch_size,
            "batch_limit_source": self.limit_source,
            "max_queue_delay_ms": self.batcher.max_delay_s * 1000.0,
            "buckets": list(self.batcher.buckets),
            "settled_ms": {str(size): round(ms, 3) for size, ms in self.settled_ms.items()},
            "shared_weight_bytes": shared.nbytes if shared else None,
            "weights_shared": shared.shared if shared else None,
            "sharing_refused": shared.refused if shared else None,
        }

    def stop(self, timeout: float | None) -> None:
        self.batcher.stop(timeout)
        if self.decoder is not None:
            self.decoder.stop(timeout)

    @property
    def jobs_per_run(self) -> int:
        """The most jobs one run takes: the sequences its decoder steps at once, for a
        sequence model; else its batch limit."""
        if self.decoder is not None:
            return self.decoder.max_sequences
        return self.batcher.max_batch_size

    @property
    def on_cpu(self) -> bool:
        return not self.providers or self.providers[0] == CPU


@dataclass
class StartedJob:
    """A job handed to its batcher: ``future`` resolves when its batch has run. A job
    pinned to a version still loading has no ``model`` (nor ``context``) until then."""

    model: ServedModel | None
    job: Any
    context: Any
    future: Future[BatchOutput]
    task: ModelKind | None = None  # the kind of job it is (an infer job on any model)

    @property
    def name(self) -> str:
        return self.model.version.name if self.model else str(self.job.model)

    @property
    def version(self) -> int | None:
        return self.model.version.version if self.model else self.job.version

    @property
    def kind(self) -> str:
        """The kind of job, as metrics and logs name it: the model's kind, or
        ``tensor`` for an infer job."""
        if self.task is ModelKind.tensor:
            return str(ModelKind.tensor)
        return str(self.model.logic.kind) if self.model else "-"
