"""GPU utilization and memory, read through NVML (the ``nvidia-ml-py`` package, which
``aimass[gpu]`` installs). Imported when first asked for, never at import: without
pynvml, a driver or a GPU, there is nothing to read and nothing fails."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuReading:
    index: int  # NVML's number for the GPU: the machine's, not CUDA_VISIBLE_DEVICES'
    utilization: float  # 0 to 1: how much of the last sample period a kernel ran
    memory_used: int  # bytes
    memory_total: int  # bytes


class Nvml:
    """Handles to some GPUs; ``read`` returns nothing where NVML could not start."""

    def __init__(self, indices: list[int] | None = None, cuda_visible: str | None = None) -> None:
        """``indices`` (NVML's numbers), else those ``cuda_visible`` (the value of
        ``CUDA_VISIBLE_DEVICES``) lists, else every GPU."""
        self.module: Any = None
        self.handles: dict[int, Any] = {}
        try:
            import pynvml
        except ImportError:
            return
        self.module = pynvml
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            if indices is None and _names_uuids(cuda_visible):
                self.handles = _handles_by_uuid(pynvml, str(cuda_visible))
            else:
                wanted = (
                    visible_gpus(count, cuda_visible)
                    if indices is None
                    else [i for i in indices if i < count]
                )
                self.handles = {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in wanted}
        except pynvml.NVMLError:
            self.handles = {}

    def read(self) -> list[GpuReading]:
        nvml = self.module
        readings = []
        for index, handle in self.handles.items():
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError:
                continue  # a missed reading is not worth an error
            readings.append(
                GpuReading(index, rates.gpu / 100.0, int(memory.used), int(memory.total))
            )
        return readings

    def close(self) -> None:
        if self.module is not None:
            # NVML may never have started (no driver): then there is nothing to shut down.
            with contextlib.suppress(self.module.NVMLError):
                self.module.nvmlShutdown()
        self.handles = {}


def _names_uuids(cuda_visible: str | None) -> bool:
    return bool(cuda_visible) and any(
        not part.strip().isdigit() for part in str(cuda_visible).split(",") if part.strip()
    )


def _handles_by_uuid(nvml: Any, cuda_visible: str) -> dict[int, Any]:
    """The GPUs a ``CUDA_VISIBLE_DEVICES`` of UUIDs lists (``GPU-...``; a MIG instance,
    ``MIG-...``, stands for its GPU), by NVML's number; an entry NVML does not know is
    skipped, as CUDA skips it."""
    handles = {}
    for part in (p.strip() for p in cuda_visible.split(",") if p.strip()):
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(part)
            if part.startswith("MIG-"):
                handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            handles[int(nvml.nvmlDeviceGetIndex(handle))] = handle
        except nvml.NVMLError:
            continue
    return handles


def visible_gpus(count: int, cuda_visible: str | None) -> list[int]:
    """NVML numbers every GPU on the machine, CUDA only those ``CUDA_VISIBLE_DEVICES``
    lists (by number here: with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which the worker sets,
    the two agree). A list of UUIDs is matched by ``Nvml`` itself; here it reads as
    every GPU."""
    if cuda_visible is None:
        return list(range(count))
    parts = [part.strip() for part in cuda_visible.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        return list(range(count))
    return [index for index in dict.fromkeys(int(part) for part in parts) if index < count]
