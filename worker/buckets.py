"""Shape-stable batching: a batch runs at one of a few fixed sizes, each on its own session.

ONNX Runtime's CUDA provider pays for every run whose input shape differs from the
previous run's: about 40 ms with cuDNN's default algorithm search, against 0.2-0.4 ms
when the shape repeats (docs/performance.md). Dynamic batching changes the batch size
on nearly every run, so on a GPU each model gets one session per *bucket* (a batch
size: powers of two up to the model's maximum batch by default, or the manifest's
``batching.buckets``). Each session is built for its one size and warmed at it; a batch
is padded with zeros up to the smallest bucket that holds it, and the padding is
dropped from the outputs before any job sees them. On the CPU, where a new shape costs
nothing and padding costs compute, batches run at their exact size unless told otherwise.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

Feeds = Mapping[str, np.ndarray]


Run = Callable[[Feeds], list[np.ndarray]]


class _Runner(Protocol):
    def __call__(self, feeds: Feeds) -> list[np.ndarray]: ...

    def interrupt(self, thread: threading.Thread) -> None: ...

    def unstoppable(self) -> Run: ...


def default_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch_size``, then ``max_batch_size`` itself."""
    sizes = {1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size}
    return tuple(sorted(sizes | {max_batch_size}))


def normalize_buckets(buckets: Sequence[int], max_batch_size: int) -> tuple[int, ...]:
    """The buckets that a model with this batch limit runs: those up to the limit, sorted,
    with the limit itself always among them (so that every batch fits one)."""
    if any(b < 1 for b in buckets):
        raise ValueError(f"batch buckets must be positive sizes, got {list(buckets)}")
    return tuple(sorted({b for b in buckets if b < max_batch_size} | {max_batch_size}))


def parse_bucket_setting(text: str) -> str | tuple[int, ...]:
    """``AIMASS_BATCH_BUCKETS``: ``auto`` (buckets on a GPU, exact sizes on the CPU),
    ``on`` (buckets everywhere), ``off`` (exact sizes everywhere), or sizes such as
    ``1,8,32`` (those buckets everywhere, instead of the manifests')."""
    value = text.strip().lower()
    if value in ("auto", "on", "off"):
        return value
    try:
        sizes = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(size < 1 for size in sizes):
        raise ValueError(
            f"AIMASS_BATCH_BUCKETS={text!r}: expected auto, on, off or batch sizes like 1,8,32"
        )
    return tuple(sorted(set(sizes)))


def bucket_for(size: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``size`` inputs (``buckets`` sorted)."""
    index = bisect.bisect_left(buckets, size)
    if index == len(buckets):
        raise ValueError(f"a batch of {size} is larger than the largest bucket {buckets[-1]}")
    return buckets[index]


def gather(feeds: Sequence[Feeds], start: int, count: int, size: int) -> dict[str, np.ndarray]:
    """Inputs ``start`` to ``start + count`` of the jobs' feeds, in order, in one array per
    input of leading dimension ``size``: each input copied once, the rest zeros."""
    names = list(feeds[0])
    first = feeds[0][names[0]]
    if len(feeds) == 1 and start == 0 and count == size == len(first):
        return dict(feeds[0])  # one job that fills its bucket exactly: no copy
    out = {}
    for name in names:
        sample = feeds[0][name]
        buffer = np.empty((size, *sample.shape[1:]), dtype=sample.dtype)
        filled = 0
        offset = 0  # index of the job's first input in the whole batch
        for job in feeds:
            array = job[name]
            lo, hi = max(start - offset, 0), min(start + count - offset, len(array))
            if lo < hi:
                buffer[filled : filled + hi - lo] = array[lo:hi]
                filled += hi - lo
            offset += len(array)
            if filled == count:
                break
        buffer[count:] = 0
        out[name] = buffer
    return out


class BucketRunner:
    """Runs a padded batch on the session built for its size. A size that is not one of
    the buckets is refused: no session ever sees a shape it was not built and warmed for."""

    def __init__(self, runners: Mapping[int, _Runner]) -> None:
        self.runners = dict(runners)
        self.buckets = tuple(sorted(self.runners))

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        return _of_size(self.runners, feeds)(feeds)

    def interrupt(self, thread: threading.Thread) -> None:
        for runner in self.runners.values():
            runner.interrupt(thread)

    def unstoppable(self) -> Run:
        """Each bucket's ``unstoppable`` runs (worker/sessions.py), picked by size."""
        runs = {size: runner.unstoppable() for size, runner in self.runners.items()}
        return lambda feeds: _of_size(runs, feeds)(feeds)


def _of_size(runners: Mapping[int, Run], feeds: Feeds) -> Run:
    """The runner built for the batch size of ``feeds``."""
    size = len(next(iter(feeds.values())))
    runner = runners.get(size)
    if runner is None:
        raise ValueError(f"no session for a batch of {size}; buckets: {tuple(sorted(runners))}")
    return runner


# A warm-up run repeats until two runs in a row agree within this share: the first runs
# of a shape allocate (and on a GPU choose kernels), and a job should not pay for that.
SETTLE_TOLERANCE = 0.2
SETTLE_MIN_RUNS = 2
SETTLE_MAX_RUNS = 12


def settle(
    run: Callable[[], object], budget_s: float = 3.0, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Run ``run`` until its time settles: at least ``SETTLE_MIN_RUNS`` times, until two
    runs in a row are within ``SETTLE_TOLERANCE`` of each other, or ``SETTLE_MAX_RUNS``
    runs or ``budget_s`` seconds have gone by. Returns the settled run time in ms (the
    faster of the last two)."""
    times: list[float] = []
    deadline = clock() + budget_s
    while True:
        started = clock()
        run()
        times.append(clock() - started)
        if len(times) >= max(2, SETTLE_MIN_RUNS):
            last, before = times[-1], times[-2]
            if (
                abs(last - before) <= SETTLE_TOLERANCE * min(last, before)
                or len(times) >= SETTLE_MAX_RUNS
                or clock() >= deadline
            ):
                return 1000.0 * min(last, before)


# The largest batch a start-up sweep tries (AIMASS_BATCH_SWEEP): ONNX Runtime on an H200
# kept gaining up to 128 on AlexNet.
SWEEP_MAX_BATCH = 256
# A sweep stops at a size whose settled run takes longer than this: a larger batch would
# only add latency that no job should wait for.
SWEEP_MAX_RUN_MS = 250.0


def sweep(settled_ms: Callable[[int], float], sizes: Sequence[int]) -> dict[int, float]:
    """The settled run time of each of ``sizes`` (ascending) in ms, stopping after the
    first size that runs longer than ``SWEEP_MAX_RUN_MS`` or after two sizes in a row
    that are not faster per input than the best so far (the plateau is passed)."""
    times: dict[int, float] = {}
    best = 0.0
    worse = 0
    for size in sizes:
        ms = times[size] = settled_ms(size)
        rate = size / max(ms, 1e-6)
        if rate > best * 1.02:
            best, worse = max(best, rate), 0
        else:
            worse += 1
        if ms > SWEEP_MAX_RUN_MS or worse == 2:
            break
    return times
