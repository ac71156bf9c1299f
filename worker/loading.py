"""A model's sessions while it loads (one per bucket, or one for every size), and the
runner of a graph without a batch dimension: what ``worker/served.py`` builds a served
model from."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aimass.worker.batcher import BatchOutput
from aimass.worker.buckets import BucketRunner, settle, sweep
from aimass.worker.kinds import ModelLogic
from aimass.worker.sessions import (
    DevicePlan,
    SessionRunner,
    SharedWeights,
    create_bucket_sessions,
    create_session,
)


@dataclass(frozen=True)
class BatchLimit:
    """A model's batch limit (``None``: to be measured) and where it comes from."""

    size: int | None
    source: str  # "setting", "manifest", "manifest (gpu)" or "sweep"


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
        rows = {len(array) for array in feeds.values()}
        if rows != {1}:
            raise ValueError(f"a model without a batch dimension runs one job a run, got {rows}")
        return [output[None] for output in self.runner({n: a[0] for n, a in feeds.items()})]

    def interrupt(self, thread: threading.Thread) -> None:
        self.runner.interrupt(thread)


def pass_on(done: Future[BatchOutput], to: Future[BatchOutput]) -> None:
    error = done.exception()
    if error is not None:
        to.set_exception(error)
    else:
        to.set_result(done.result())
