"""GPU utilization and memory while levels are measured, read through NVML.

``pynvml`` (the ``nvidia-ml-py`` package) is imported when a sampler starts, never at
import: on a machine without it, or without a GPU, the sampler records nothing and every
window reads ``None``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from typing import Any


class GpuSampler:
    """Samples the GPUs' utilization (%) and memory used every ``interval`` seconds, as
    ``CpuSampler`` samples processes, so that any window can be read afterwards."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._nvml, self._handles = _open_nvml()
        self._times: list[float] = []
        self._utilization: list[float] = []  # mean over the GPUs sampled
        self._memory: list[int] = []  # bytes used, summed over the GPUs sampled
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._handles:
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="gpu-sampler")
            self._thread.start()

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def sample(self) -> None:
        if not self._handles:
            return
        nvml = self._nvml
        try:
            rates = [nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
            used = [nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles]
        except nvml.NVMLError:
            return  # one missed reading is not worth failing a run over
        now = time.monotonic()
        with self._lock:
            self._times.append(now)
            self._utilization.append(statistics.fmean(rates))
            self._memory.append(sum(used))

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
            "gpus": len(self._handles),
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
        if self._nvml is not None:
            # NVML may never have started (no driver): then there is nothing to shut down.
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()


def _open_nvml() -> tuple[Any, list[Any]]:
    """The ``pynvml`` module and a handle per GPU the benchmark's workers can see; no
    handles where pynvml, the driver or a GPU is missing."""
    try:
        import pynvml
    except ImportError:
        return None, []
    try:
        pynvml.nvmlInit()
        indices = visible_gpus(pynvml.nvmlDeviceGetCount(),
                               os.environ.get("CUDA_VISIBLE_DEVICES"))
        return pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
    except pynvml.NVMLError:
        return pynvml, []


def visible_gpus(count: int, cuda_visible: str | None) -> list[int]:
    """NVML numbers every GPU on the machine, CUDA only those ``CUDA_VISIBLE_DEVICES``
    lists: sample the workers' GPUs, not idle neighbours that would dilute the mean.
    Listed UUIDs are not matched: every GPU is sampled then."""
    if cuda_visible is None:
        return list(range(count))
    parts = [part.strip() for part in cuda_visible.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        return list(range(count))
    return [index for index in dict.fromkeys(int(part) for part in parts) if index < count]
