"""ONNX Runtime's throughput at several batch sizes, to choose a model's batching default.

The dynamic batcher waits for at most ``max_batch_size`` jobs. Past the batch size at
which ONNX Runtime alone stops getting faster per image, a bigger batch only adds
latency; below it, throughput is left on the table. The default is therefore the
smallest measured batch size within ``near_best`` of the best throughput.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.export.sessions import cpu_session
from aimass.protocol.manifest import NEAR_BEST, near_best_batch

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Throughput:
    batch_size: int
    images_per_second: float


def measure(
    model: bytes | Path,
    sample_shape: Sequence[int],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seconds_each: float = 1.0,
    seed: int = 0,
) -> list[Throughput]:
    """Images per second of the model's ``image`` input at each batch size (median of runs).

    Each batch size runs once to warm up, then repeatedly for about ``seconds_each``.
    """
    session = cpu_session(model)
    rng = np.random.default_rng(seed)
    results = []
    for batch_size in batch_sizes:
        feeds = {"image": rng.random((batch_size, *sample_shape), dtype=np.float32)}
        session.run(None, feeds)  # warm-up: first runs allocate and pick kernels
        timings: list[float] = []
        deadline = time.perf_counter() + seconds_each
        while len(timings) < 3 or time.perf_counter() < deadline:
            started = time.perf_counter()
            session.run(None, feeds)
            timings.append(time.perf_counter() - started)
        results.append(Throughput(batch_size, batch_size / float(np.median(timings))))
    return results


def best_batch_size(results: Sequence[Throughput], near_best: float = NEAR_BEST) -> int:
    """The smallest batch size whose throughput is within ``near_best`` of the best one."""
    return near_best_batch({r.batch_size: r.images_per_second for r in results}, near_best)
