"""Loading a model: the batch sizes it runs at on this process's device (its batch
limit and buckets), its sessions while it loads (one per bucket, or one for every size),
and the runner of a graph without a batch dimension: what ``worker/served.py`` builds a
served model from."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aimass.protocol.manifest import Manifest, ModelKind
from aimass.worker.buckets import (
    BucketRunner,
    Run,
    default_buckets,
    normalize_buckets,
    settle,
    sweep,
)
from aimass.worker.kinds import ModelLogic
from aimass.worker.sessions import (
    DevicePlan,
    SessionRunner,
    SharedWeights,
    create_bucket_sessions,
    create_session,
)
from aimass.worker.settings import WorkerSettings


@dataclass(frozen=True)
class BatchLimit:
    """A model's batch limit (``None``: to be measured) and where it comes from."""

    size: int | None
    source: str  # "setting", "manifest", "manifest (gpu)" or "sweep"


def buckets_for(
    settings: WorkerSettings, plan: DevicePlan, manifest: Manifest, max_batch: int
) -> tuple[int, ...]:
    """The batch sizes this model's sessions are built for; empty: exact sizes."""
    if not manifest.batched:
        return ()  # one job a run: nothing to pad
    setting = settings.bucket_setting()
    if setting == "off" or (setting == "auto" and plan.gpu is None):
        return ()
    if isinstance(setting, tuple):
        return normalize_buckets(setting, max_batch)
    return normalize_buckets(manifest.batching.buckets or default_buckets(max_batch), max_batch)


def batch_limit(settings: WorkerSettings, plan: DevicePlan, manifest: Manifest) -> BatchLimit:
    """A model's batch limit on this process's device, and where it comes from: the
    operator's setting, else the manifest's limit for this kind of device, else (on a
    GPU, or wherever AIMASS_BATCH_SWEEP=on) a sweep at start-up."""
    if not manifest.batched:
        return BatchLimit(1, "unbatched model")
    given = settings.batch_limit(manifest.name)
    if given is not None:
        return BatchLimit(given, "setting")
    if manifest.kind is ModelKind.sequence:  # a step's batch: the sequences in flight
        return BatchLimit(settings.max_sequences, "AIMASS_MAX_SEQUENCES")
    sweep_setting = settings.batch_sweep
    on_gpu = plan.gpu is not None
    if sweep_setting == "on":
        return BatchLimit(None, "sweep")
    batching = manifest.batching
    if on_gpu and batching.max_batch_size_gpu is not None:
        return BatchLimit(batching.max_batch_size_gpu, "manifest (gpu)")
    if on_gpu and sweep_setting == "auto":
        return BatchLimit(None, "sweep")
    return BatchLimit(batching.max_batch_size, "manifest")


class Sessions:
    """A model's sessions while it loads: one per bucket, or one for every size."""

    def __init__(
        self, by_size: dict[int, Any], shared: SharedWeights | None, plain: Any = None
    ) -> None:
        self.by_size = by_size
        self.shared = shared
        self.plain = plain
        self.runner: BucketRunner | SessionRunner | UnbatchedRunner = (
            SessionRunner(plain)
            if plain is not None
            else BucketRunner({size: SessionRunner(s) for size, s in by_size.items()})
        )

    @classmethod
    def build(
        cls, model: Path, plan: DevicePlan, buckets: tuple[int, ...], batched: bool = True
    ) -> Sessions:
        if buckets:
            by_size, shared = create_bucket_sessions(model, plan, buckets)
            return cls(by_size, shared)
        sessions = cls({}, None, create_session(model, plan))
        if not batched:
            sessions.runner = UnbatchedRunner(SessionRunner(sessions.plain))
        return sessions

    @property
    def sessions(self) -> list[Any]:
        return [self.plain] if self.plain is not None else list(self.by_size.values())

    def settle(self, logic: ModelLogic, size: int) -> float:
        """Run at ``size`` until the run time settles; returns it in ms."""
        feeds = logic.warmup_feeds(size)
        return settle(lambda: self.runner(feeds))

    def sweep(self, logic: ModelLogic, sizes: Sequence[int]) -> dict[int, float]:
        """Settled run times at ``sizes`` until the throughput stops growing."""
        return sweep(lambda size: self.settle(logic, size), sizes)

    def keep(self, model: Path, plan: DevicePlan, buckets: tuple[int, ...]) -> None:
        """Only the sessions of ``buckets``: those the sweep built beyond the chosen limit
        are let go, any bucket it did not build is built now."""
        self.by_size = {
            size: self.by_size.get(size)
            or create_session(model, plan, batch_size=size, shared=self.shared)
            for size in buckets
        }
        self.runner = BucketRunner({size: SessionRunner(s) for size, s in self.by_size.items()})


class UnbatchedRunner:
    """Runs a graph without a batch dimension: its batcher sees each job as one row (a
    leading axis of 1, worker/infer.py) and runs one job a run; the axis comes off
    before the run and goes back on its outputs."""

    def __init__(self, runner: SessionRunner) -> None:
        self.runner = runner

    def __call__(self, feeds: Any) -> list[np.ndarray]:
        return _unbatched(self.runner, feeds)

    def interrupt(self, thread: threading.Thread) -> None:
        self.runner.interrupt(thread)

    def unstoppable(self) -> Run:
        """The session's ``unstoppable`` runs (worker/sessions.py), one job a run."""
        run = self.runner.unstoppable()
        return lambda feeds: _unbatched(run, feeds)


def _unbatched(run: Run, feeds: Any) -> list[np.ndarray]:
    """One job's run through a graph without a batch dimension."""
    rows = {len(array) for array in feeds.values()}
    if rows != {1}:
        raise ValueError(f"a model without a batch dimension runs one job a run, got {rows}")
    return [output[None] for output in run({n: a[0] for n, a in feeds.items()})]
