"""The ceiling: ONNX Runtime alone, in one process, with the worker's session settings.

Run as ``python -m aimass.bench.raw SPEC_JSON`` so that the measurement has a process
of its own; prints one JSON document on stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RawSpec:
    """What to measure: a model file, the input shape (no batch dimension), the batch
    sizes to sweep, and how long to time each one."""

    model_file: str
    input_name: str
    input_shape: list[int]
    batch_sizes: list[int]
    seconds_per_size: float
    gpu: int | None = None
    min_runs: int = 3
    # Stop the sweep after a size whose single run took this long: larger sizes would
    # take seconds each, and on a CPU the plateau is long reached by then.
    max_run_s: float = 1.0

    @classmethod
    def from_json(cls, text: str) -> RawSpec:
        return cls(**json.loads(text))


def measure(spec: RawSpec) -> dict[str, Any]:
    """images/s per batch size and the batch-1 latency (median); stops the sweep early
    once two sizes in a row fall clearly below the best (the plateau has been passed) or
    one run takes longer than ``max_run_s``."""
    from aimass.worker.sessions import DevicePlan, cpu_threads_per_process, create_session

    plan = DevicePlan(gpu=spec.gpu, intra_op_threads=cpu_threads_per_process(1))
    session = create_session(Path(spec.model_file), plan)
    rng = np.random.default_rng(0)
    per_size: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}  # process CPU per image: what a shared core costs
    batch1_ms: list[float] = []
    best = 0.0
    worse_in_a_row = 0
    for size in spec.batch_sizes:
        feeds = {spec.input_name: rng.random((size, *spec.input_shape), dtype=np.float32)}
        session.run(None, feeds)  # warm up this shape
        runs: list[float] = []
        started, cpu_started = time.perf_counter(), time.process_time()
        while len(runs) < spec.min_runs or time.perf_counter() - started < spec.seconds_per_size:
            begin = time.perf_counter()
            session.run(None, feeds)
            runs.append(time.perf_counter() - begin)
        rate = size * len(runs) / sum(runs)
        per_size[str(size)] = rate
        cpu_ms[str(size)] = 1000.0 * (time.process_time() - cpu_started) / (size * len(runs))
        if size == 1:
            batch1_ms = [r * 1000.0 for r in runs]
        if rate > best:
            best, worse_in_a_row = rate, 0
        elif rate < 0.97 * best:
            worse_in_a_row += 1
        if worse_in_a_row == 2 or min(runs) > spec.max_run_s:
            break
    return {
        "images_per_s_by_batch": per_size,
        "cpu_ms_per_image_by_batch": cpu_ms,
        "batch1_latency_ms": statistics.median(batch1_ms) if batch1_ms else None,
        "providers": list(session.get_providers()),
        "intra_op_threads": plan.intra_op_threads,
    }


def main(argv: list[str]) -> int:
    spec = RawSpec.from_json(argv[0])
    print(json.dumps(measure(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
