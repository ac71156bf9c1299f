"""Shape-stable batching: bucket choice, padding, and dropping the padding again."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from aimass.protocol.manifest import near_best_batch
from aimass.worker.batcher import Batcher
from aimass.worker.buckets import (
    BucketRunner,
    bucket_for,
    default_buckets,
    gather,
    normalize_buckets,
    settle,
    sweep,
)
from aimass.worker.runs import run_in_chunks

pytestmark = pytest.mark.unit


def test_default_buckets_are_powers_of_two_up_to_the_max_batch() -> None:
    assert default_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert default_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert default_buckets(1) == (1,)


def test_the_max_batch_is_always_a_bucket_and_larger_ones_are_dropped() -> None:
    assert normalize_buckets([8, 1, 32, 128], 64) == (1, 8, 32, 64)
    with pytest.raises(ValueError, match="positive"):
        normalize_buckets([0, 4], 8)


@pytest.mark.parametrize(("size", "bucket"), [(1, 1), (2, 2), (3, 4), (5, 8), (33, 64), (64, 64)])
def test_a_batch_goes_to_the_smallest_bucket_that_holds_it(size: int, bucket: int) -> None:
    assert bucket_for(size, default_buckets(64)) == bucket


def test_a_batch_larger_than_every_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than the largest bucket 8"):
        bucket_for(9, (1, 2, 4, 8))


def test_gather_copies_a_span_across_jobs_and_zeros_the_rest() -> None:
    feeds = [
        {"x": np.full((n, 2), n, np.float32), "k": np.full((n,), n, np.int64)} for n in (2, 3, 4)
    ]
    out = gather(feeds, start=1, count=5, size=8)
    assert out["x"][:, 0].tolist() == [2, 3, 3, 3, 4, 0, 0, 0]
    assert out["k"].tolist() == [2, 3, 3, 3, 4, 0, 0, 0]
    assert out["k"].dtype == np.int64


def test_gather_passes_a_job_that_fills_its_bucket_without_a_copy() -> None:
    x = np.ones((4, 3), np.float32)
    assert gather([{"x": x}], 0, 4, 4)["x"] is x


def test_run_in_chunks_pads_each_run_to_a_bucket_and_drops_the_padding() -> None:
    seen: list[int] = []

    def runner(feeds):
        seen.append(len(feeds["x"]))
        return [feeds["x"] * 2]

    feeds = [{"x": np.arange(i * 3, i * 3 + 3, dtype=np.float32)[:, None] + 1} for i in range(3)]
    out, ran = run_in_chunks(runner, feeds, max_batch_size=4, buckets=(1, 2, 4))
    assert seen == [4, 4, 1]
    assert out[0][:, 0].tolist() == [2.0 * (i + 1) for i in range(9)]
    assert ran == 4
    out, ran = run_in_chunks(runner, feeds[:1], max_batch_size=4, buckets=(1, 2, 4))
    assert seen[-1] == 4 and ran == 4
    assert out[0][:, 0].tolist() == [2.0, 4.0, 6.0]  # 3 inputs ran as 4; 3 come back


class Recording:
    """A runner for one bucket: records the sizes it is given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.interrupted: list[threading.Thread] = []

    def __call__(self, feeds):
        self.sizes.append(len(feeds["x"]))
        return [feeds["x"].sum(axis=1)]

    def interrupt(self, thread: threading.Thread) -> None:
        self.interrupted.append(thread)

    def unstoppable(self):
        def run(feeds):
            self.unstoppable_sizes.append(len(feeds["x"]))
            return self(feeds)

        self.unstoppable_sizes: list[int] = []
        return run


def test_unstoppable_bucket_runs_go_to_each_size_s_own_runner() -> None:
    runners = {size: Recording() for size in (1, 4)}
    run = BucketRunner(runners).unstoppable()
    assert run({"x": np.ones((4, 2), np.float32)})[0].tolist() == [2.0] * 4
    run({"x": np.ones((1, 2), np.float32)})
    assert {size: r.unstoppable_sizes for size, r in runners.items()} == {1: [1], 4: [4]}
    with pytest.raises(ValueError, match="no session for a batch of 3"):
        run({"x": np.zeros((3, 2), np.float32)})


def test_a_bucketed_batcher_runs_each_size_on_its_own_session_only() -> None:
    runners = {size: Recording() for size in (1, 2, 4, 8)}
    run = BucketRunner(runners)
    batcher = Batcher("test", run, max_batch_size=8, max_delay_ms=0, buckets=run.buckets)
    for n in (1, 3, 2, 7, 5, 8, 1):
        result = batcher.submit({"x": np.full((n, 2), n, np.float32)}, n, arrived=0.0).result(
            timeout=5
        )
        assert result.outputs[0].tolist() == [2.0 * n] * n
        assert result.batch_size == n and result.run_size == bucket_for(n, run.buckets)
    batcher.stop(timeout=5)
    assert {size: set(r.sizes) for size, r in runners.items()} == {1: {1}, 2: {2}, 4: {4}, 8: {8}}
    with pytest.raises(ValueError, match="no session for a batch of 3"):
        run({"x": np.zeros((3, 2), np.float32)})
    run.interrupt(threading.current_thread())
    assert all(r.interrupted for r in runners.values())


@pytest.mark.parametrize(
    ("setting", "gpu", "manifest_buckets", "expected"),
    [
        ("auto", None, None, ()),  # the CPU: exact sizes
        ("auto", 0, None, (1, 2, 4, 8, 16)),  # a GPU: powers of two up to the max batch
        ("auto", 0, [4, 16], (4, 16)),  # the manifest's own
        ("on", None, [2, 5, 64], (2, 5, 16)),  # larger than the max batch: dropped
        ("off", 0, [4, 16], ()),
        ("1,8", 0, [4, 16], (1, 8, 16)),  # the worker's list wins over the manifest's
    ],
)
def test_which_buckets_a_model_runs(
    tmp_path,
    setting: str,
    gpu: int | None,
    manifest_buckets: list[int] | None,
    expected: tuple[int, ...],
) -> None:
    from aimass.protocol.manifest import BatchingSpec, Manifest
    from aimass.worker.loading import buckets_for
    from aimass.worker.served import ServedModels
    from aimass.worker.sessions import DevicePlan
    from aimass.worker.settings import WorkerSettings
    from tests.support.tiny_models import build_repository

    folder = build_repository(tmp_path) / "tiny" / "1"
    manifest = Manifest.read(folder).model_copy(
        update={"batching": BatchingSpec(max_batch_size=16, buckets=manifest_buckets)}
    )
    runtime = ServedModels(
        WorkerSettings(model_repository=tmp_path, batch_buckets=setting),
        DevicePlan(gpu=gpu, intra_op_threads=1),
    )
    assert buckets_for(runtime.settings, runtime.plan, manifest, 16) == expected


def test_settle_runs_until_two_runs_agree_and_returns_the_settled_time() -> None:
    durations = iter([0.050, 0.012, 0.010, 0.0105, 0.5])  # first runs allocate
    clock = [0.0]

    def tick() -> float:
        return clock[0]

    def run() -> None:
        clock[0] += next(durations)

    assert settle(run, clock=tick) == pytest.approx(10.0)  # 10 and 10.5 ms agree
    assert next(durations) == 0.5  # it stopped there


def test_settle_runs_at_least_twice_and_gives_up_after_its_budget() -> None:
    runs: list[int] = []
    clock = [0.0]

    def run() -> None:
        runs.append(1)
        clock[0] += 1.0 + len(runs)  # never settles

    settle(run, budget_s=3.0, clock=lambda: clock[0])
    assert len(runs) == 2


def test_sweep_stops_past_the_plateau_and_the_limit_is_the_smallest_near_best() -> None:
    ms = {1: 1.0, 2: 1.1, 4: 1.3, 8: 2.0, 16: 4.0, 32: 8.0, 64: 16.0}
    tried: list[int] = []

    def settled(size: int) -> float:
        tried.append(size)
        return ms[size]

    times = sweep(settled, sorted(ms))
    assert tried == [1, 2, 4, 8, 16, 32]  # 16 and 32 no faster per input than 8
    assert near_best_batch({s: s / t for s, t in times.items()}) == 8
