"""GPU utilization and memory while levels are measured, read through NVML.

``pynvml`` (the ``nvidia-ml-py`` package) is imported when a sampler starts, never at
import: on a machine without it, or without a GPU, the sampler records nothing and every
window reads ``None``.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

from aimass.worker.gpu import Nvml, visible_gpus

__all__ = ["GpuSampler", "visible_gpus"]


class GpuSampler:
    """Samples the GPUs' utilization (%) and memory used every ``interval`` seconds, as
    ``CpuSampler`` samples processes, so that any window can be read afterwards. Only
    the GPUs ``CUDA_VISIBLE_DEVICES`` lists: the workers' GPUs, not idle neighbours that
    would dilute the mean."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._nvml = Nvml(cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
        self._times: list[float] = []
        self._utilization: list[float] = []  # mean over the GPUs sampled
        self._memory: list[int] = []  # bytes used, summed over the GPUs sampled
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="gpu-sampler")
            self._thread.start()

    @property
    def available(self) -> bool:
        return bool(self._nvml.handles)

    def sample(self) -> None:
        readings = self._nvml.read()
        if not readings:
            return
        now = time.monotonic()
        with self._lock:
            self._times.append(now)
            self._utilization.append(statistics.fmean(r.utilization * 100 for r in readings))
            self._memory.append(sum(r.memory_used for r in readings))

    def window(self, t0: float, t1: float) -> dict[str, Any] | None:
        """Mean and max between two ``time.monotonic()`` instants; ``None`` when nothing
        was sampled then (no pynvml, no GPU)."""
        with self._lock:
            picked = [i for i, t in enumerate(self._times) if t0 <= t <= t1]
            utilization = [self._utilization[i] for i in picked]
            memory = [self._memory[i] for i in picked]
        if not picked:
            return None
        return {
            "gpus": len(self._nvml.handles),
            "samples": len(picked),
            "utilization_mean_percent": statistics.fmean(utilization),
            "utilization_max_percent": max(utilization),
            "memory_used_mean_bytes": statistics.fmean(memory),
            "memory_used_max_bytes": max(memory),
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._nvml.close()
