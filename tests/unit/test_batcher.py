"""The batcher, driven deterministically with a plain queue and a fake clock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from aimass.protocol.errors import ModelError
from aimass.worker.batcher import (
    STOP,
    Batcher,
    DeviceLost,
    Inbox,
    Pending,
    collect_batch,
)
from aimass.worker.runs import run_in_chunks
from aimass.worker.sessions import DeviceHealth

pytestmark = pytest.mark.unit


def job(size: int = 1, enqueued: float = 0.0, value: float = 0.0) -> Pending:
    return Pending(
        feeds={"x": np.full((size, 2), value, np.float32)},
        size=size,
        arrived=0.0,
        enqueued=enqueued,
    )


class ScriptedInbox(Inbox):
    """An inbox whose ``wait`` advances a fake clock instead of sleeping: to the end of
    the timeout, or to ``poke_at`` when the feeder pokes before then."""

    def __init__(self, clock: list[float], poke_at: float | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.poke_at = poke_at
        self.timeouts: list[float | None] = []

    def wait(self, inputs: int, timeout: float | None) -> None:
        self.timeouts.append(timeout)
        assert timeout is not None, "the scripted inbox never blocks"
        end = self.clock[0] + timeout
        if self.poke_at is not None and self.clock[0] <= self.poke_at < end:
            end = self.poke_at
        self.clock[0] = end


def test_full_batch_runs_without_waiting_for_the_deadline() -> None:
    clock = [0.0]
    jobs = ScriptedInbox(clock)
    for _ in range(5):
        jobs.put(job())
    batch = collect_batch(jobs, max_batch_size=4, max_delay_s=10.0, clock=lambda: clock[0])
    assert batch is not None and len(batch) == 4
    assert clock[0] == 0.0  # never waited
    assert len(jobs) == 1


def test_partial_batch_runs_at_the_oldest_jobs_deadline() -> None:
    clock = [100.0]
    jobs = ScriptedInbox(clock)
    jobs.put(job(enqueued=99.0))  # has already waited 1 s of its 2.5 s
    jobs.put(job(enqueued=100.0))
    batch = collect_batch(jobs, max_batch_size=8, max_delay_s=2.5, clock=lambda: clock[0])
    assert batch is not None and len(batch) == 2
    # The wait is what is left of the first job's deadline, not a fresh timer.
    assert sum(t for t in jobs.timeouts if t) == pytest.approx(1.5, abs=1e-3)
    assert clock[0] == pytest.approx(101.5, abs=1e-3)


def test_an_idle_feeder_lets_a_partial_batch_run_at_once() -> None:
    clock = [0.0]
    jobs = ScriptedInbox(clock)
    jobs.put(job())
    jobs.put(job())
    batch = collect_batch(
        jobs, max_batch_size=8, max_delay_s=5.0, clock=lambda: clock[0], idle=lambda: True
    )
    assert batch is not None and len(batch) == 2
    assert clock[0] == 0.0  # no waiting: nothing more is on its way


def test_waiting_stops_when_the_feeder_goes_idle_and_pokes() -> None:
    clock = [0.0]
    jobs = ScriptedInbox(clock, poke_at=0.002)
    jobs.put(job())
    batch = collect_batch(
        jobs,
        max_batch_size=8,
        max_delay_s=5.0,
        clock=lambda: clock[0],
        idle=lambda: clock[0] >= 0.002,
    )
    assert batch is not None and len(batch) == 1
    assert clock[0] == pytest.approx(0.002)  # at the poke, not at the 5 s deadline


def test_the_inbox_wakes_its_batch_thread_for_a_full_batch_a_stop_or_a_poke() -> None:
    inbox = Inbox()
    woke: list[float] = []

    def waiter(inputs: int) -> threading.Thread:
        def run() -> None:
            started = time.monotonic()
            inbox.wait(inputs, timeout=5.0)
            woke.append(time.monotonic() - started)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.05)
        return thread

    thread = waiter(3)
    inbox.put(job())
    inbox.put(job())
    time.sleep(0.05)
    assert not woke  # two of the three inputs it waits for: no wake-up yet
    inbox.put(job())
    thread.join(1.0)
    assert len(woke) == 1 and woke[0] < 1.0
    while inbox.take() is not None:
        pass
    for wake in (inbox.poke, lambda: inbox.put(STOP)):
        thread = waiter(8)
        wake()
        thread.join(1.0)
        assert not thread.is_alive()
    assert len(woke) == 3 and max(woke) < 1.0


def test_zero_delay_takes_only_what_is_already_queued() -> None:
    clock = [0.0]
    jobs = ScriptedInbox(clock)
    jobs.put(job())
    jobs.put(job())
    batch = collect_batch(jobs, max_batch_size=8, max_delay_s=0.0, clock=lambda: clock[0])
    assert batch is not None and len(batch) == 2


def test_multi_input_jobs_count_their_inputs() -> None:
    clock = [0.0]
    jobs = ScriptedInbox(clock)
    jobs.put(job(size=3))
    jobs.put(job(size=3))
    jobs.put(job(size=3))
    batch = collect_batch(jobs, max_batch_size=6, max_delay_s=1.0, clock=lambda: clock[0])
    assert batch is not None and [j.size for j in batch] == [3, 3]


def test_stop_ends_after_the_jobs_before_it() -> None:
    clock = [0.0]
    jobs = ScriptedInbox(clock)
    jobs.put(job())
    jobs.put(STOP)
    batch = collect_batch(jobs, max_batch_size=8, max_delay_s=1.0, clock=lambda: clock[0])
    assert batch is not None and len(batch) == 1
    assert collect_batch(jobs, 8, 1.0, clock=lambda: clock[0]) is None


def test_run_in_chunks_splits_oversized_batches_and_keeps_order() -> None:
    seen: list[int] = []

    def runner(feeds):
        seen.append(len(feeds["x"]))
        return [feeds["x"] * 2]

    feeds = [{"x": np.arange(i * 3, i * 3 + 3, dtype=np.float32)[:, None]} for i in range(3)]
    out, ran = run_in_chunks(runner, feeds, max_batch_size=4)
    assert seen == [4, 4, 1] and ran == 4
    assert out[0][:, 0].tolist() == [2.0 * i for i in range(9)]


def test_batcher_splits_outputs_back_per_job() -> None:
    ran = threading.Event()

    def runner(feeds):
        ran.set()
        return [feeds["x"].sum(axis=1)]

    batcher = Batcher("test", runner, max_batch_size=8, max_delay_ms=50)
    futures = [
        batcher.submit({"x": np.full((n, 2), n, np.float32)}, n, arrived=0.0) for n in (1, 2, 3)
    ]
    results = [f.result(timeout=5) for f in futures]
    batcher.stop(timeout=5)
    assert ran.is_set()
    assert [r.outputs[0].tolist() for r in results] == [[2.0], [4.0, 4.0], [6.0, 6.0, 6.0]]
    assert {r.batch_size for r in results} == {6}


def test_a_failing_batch_fails_its_jobs_with_model_error_and_the_loop_goes_on() -> None:
    calls = []

    def runner(feeds):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [feeds["x"]]

    batcher = Batcher("test", runner, max_batch_size=1, max_delay_ms=0)
    first = batcher.submit({"x": np.zeros((1, 1), np.float32)}, 1, arrived=0.0)
    with pytest.raises(ModelError, match="boom"):
        first.result(timeout=5)
    second = batcher.submit({"x": np.ones((1, 1), np.float32)}, 1, arrived=0.0)
    assert second.result(timeout=5).outputs[0].tolist() == [[1.0]]
    batcher.stop(timeout=5)


def test_a_job_to_run_alone_gets_a_batch_of_its_own() -> None:
    clock = [0.0]
    jobs = ScriptedInbox(clock)
    first, second, third = job(), job(), job()
    second.alone = True
    for item in (first, second, third):
        jobs.put(item)
    batches = [collect_batch(jobs, 8, 1.0, clock=lambda: clock[0]) for _ in range(3)]
    assert batches == [[first], [second], [third]]


def test_the_start_of_each_batch_is_told_before_it_runs() -> None:
    told: list[list[str]] = []
    ran: list[int] = []

    def runner(feeds):
        ran.append(len(told))
        return [feeds["x"]]

    batcher = Batcher("test", runner, max_batch_size=8, max_delay_ms=0, on_start=told.append)
    batcher.submit({"x": np.zeros((1, 1), np.float32)}, 1, 0.0, job_id="a").result(timeout=5)
    batcher.stop(timeout=5)
    assert told == [["a"]] and ran == [1]  # told first, then run


def test_a_sticky_cuda_error_fails_no_job_and_no_batch_runs_after_it() -> None:
    """The device broke: the batch's jobs get DeviceLost (left for another worker, not
    failed), the service is told once per batch, and later batches do not run."""
    calls: list[int] = []
    told: list[str] = []

    def runner(feeds):
        calls.append(1)
        raise RuntimeError("CUDA failure 700: an illegal memory access was encountered")

    batcher = Batcher(
        "test",
        runner,
        max_batch_size=1,
        max_delay_ms=0,
        device=DeviceHealth(),
        on_device_lost=told.append,
    )
    first = batcher.submit({"x": np.zeros((1, 1), np.float32)}, 1, arrived=0.0)
    with pytest.raises(DeviceLost, match="illegal memory access"):
        first.result(timeout=5)
    second = batcher.submit({"x": np.zeros((1, 1), np.float32)}, 1, arrived=0.0)
    with pytest.raises(DeviceLost):
        second.result(timeout=5)
    batcher.stop(timeout=5)
    assert len(calls) == 1 and len(told) == 2 and "illegal memory access" in told[0]
