"""Running a batch's jobs through a model: grouped by the shape of their inputs, in
runs of at most the batch limit, each padded up to its bucket where there are buckets.
The batcher (worker/batcher.py) and ``aimass doctor`` run jobs this way."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from aimass.worker.buckets import bucket_for, gather

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[Feeds], list[np.ndarray]]


def shape_key(feeds: Feeds) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    """What jobs must share to run together: each input's name, shape past the batch
    dimension, and dtype."""
    return tuple(sorted((name, array.shape[1:], array.dtype.str) for name, array in feeds.items()))


def run_by_shape(
    runner: Runner, feeds: list[Feeds], max_batch_size: int, buckets: Sequence[int] = ()
) -> tuple[list[list[np.ndarray]], int]:
    """Run a batch's jobs and return each job's slice of every output, in job order,
    with the largest batch size a run had.

    Jobs whose inputs have the same non-batch shapes and dtypes run together; a batch
    that holds several shapes (a model with an open dimension, such as a sequence
    length) runs once per shape. Open dimensions are never padded: padding is only
    along the batch dimension, where the buckets ask for it."""
    groups: dict[tuple[tuple[str, tuple[int, ...], str], ...], list[int]] = {}
    for index, job in enumerate(feeds):
        groups.setdefault(shape_key(job), []).append(index)
    parts: list[list[np.ndarray]] = [[] for _ in feeds]
    ran = 0
    for members in groups.values():
        outputs, run_size = run_in_chunks(
            runner, [feeds[i] for i in members], max_batch_size, buckets
        )
        ran = max(ran, run_size)
        offset = 0
        for i in members:
            size = len(next(iter(feeds[i].values())))
            parts[i] = [out[offset : offset + size] for out in outputs]
            offset += size
    return parts, ran


def run_in_chunks(
    runner: Runner, feeds: list[Feeds], max_batch_size: int, buckets: Sequence[int] = ()
) -> tuple[list[np.ndarray], int]:
    """Run the jobs' inputs, in order, at most ``max_batch_size`` at a time, and return
    each output concatenated back in job order, with the largest batch size a run had.

    Without ``buckets`` each run has its exact size; with them, each run is padded up to
    its bucket and the padding is cut from its outputs."""
    if buckets:
        return _run_in_buckets(runner, feeds, max_batch_size, buckets)
    names = list(feeds[0])
    if len(feeds) == 1:  # a batch of one job: its arrays as they are, no copy
        joined = dict(feeds[0])
    else:
        joined = {name: np.concatenate([f[name] for f in feeds]) for name in names}
    total = len(joined[names[0]])
    if total <= max_batch_size:
        return runner(joined), total
    parts: list[list[np.ndarray]] = []
    for start in range(0, total, max_batch_size):
        parts.append(runner({n: a[start : start + max_batch_size] for n, a in joined.items()}))
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)], max_batch_size


def _run_in_buckets(
    runner: Runner, feeds: list[Feeds], max_batch_size: int, buckets: Sequence[int]
) -> tuple[list[np.ndarray], int]:
    first = next(iter(feeds[0]))
    total = sum(len(f[first]) for f in feeds)
    parts: list[list[np.ndarray]] = []
    ran = 0
    for start in range(0, total, max_batch_size):
        count = min(max_batch_size, total - start)
        size = bucket_for(count, buckets)
        outputs = runner(gather(feeds, start, count, size))
        parts.append([out[:count] for out in outputs])
        ran = max(ran, size)
    if len(parts) == 1:
        return parts[0], ran
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)], ran
