"""Which devices a worker runs on: one process per GPU, or one on the CPU."""

from __future__ import annotations

import os

from aimass.worker.sessions import DevicePlan, cpu_threads_per_process, gpu_count
from aimass.worker.settings import WorkerSettings


def resolve_devices(devices: str) -> list[int | None]:
    """``auto`` -> every visible GPU (or the CPU when there is none); ``cpu`` -> the CPU;
    ``0,1`` -> those GPUs. ``None`` stands for the CPU."""
    value = devices.strip().lower()
    if value == "cpu":
        return [None]
    if value == "auto":
        count = gpu_count()
        return list(range(count)) if count else [None]
    try:
        indices = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--devices {devices!r}: expected 'auto', 'cpu' or GPU indices like '0,1'"
        ) from None
    if not indices or any(i < 0 for i in indices):
        raise ValueError(f"--devices {devices!r}: expected GPU indices like '0,1'")
    return list(dict.fromkeys(indices))


def processes_per_device(setting: int, devices: list[int | None]) -> int:
    """Worker processes on each device: ``setting`` when given; else one on the CPU, and on
    GPUs as many as leave each about four cores (at most 8): one Python process cannot
    decode, batch and store results fast enough to keep a large GPU busy."""
    if setting:
        return setting
    if devices == [None]:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // (4 * len(devices))))


def use_pci_bus_order() -> None:
    """Number GPUs as NVML does (by PCI bus), so that a GPU index means the same GPU to
    CUDA, to NVML (metrics) and to the operator; CUDA's own default puts the fastest
    first. Call before any CUDA work; an order the environment sets is kept."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def visible_device(index: int, cuda_visible: str | None) -> str:
    """What ``CUDA_VISIBLE_DEVICES`` must say for a process to see only GPU ``index`` of
    those this process sees: the index-th entry of a list that the node or container set
    already (``2,3``; ``GPU-<uuid>``; ``MIG-<uuid>``), or the index itself."""
    if cuda_visible is None or not cuda_visible.strip():
        return str(index)
    entries = [part.strip() for part in cuda_visible.split(",") if part.strip()]
    if index >= len(entries):
        raise ValueError(
            f"GPU {index} was asked for, but CUDA_VISIBLE_DEVICES="
            f"{cuda_visible!r} makes only {len(entries)} visible (GPU "
            f"indices count from 0 within that list)"
        )
    return entries[index]


def pin_process(device: int | None) -> None:
    """Make this process see only its GPU, numbered within the GPUs it sees now (call
    before any CUDA work)."""
    if device is not None:
        use_pci_bus_order()
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_device(
            device, os.environ.get("CUDA_VISIBLE_DEVICES")
        )


def plan_for(settings: WorkerSettings, device: int | None, processes: int = 1) -> DevicePlan:
    threads = settings.intra_op_threads or cpu_threads_per_process(
        processes if device is None else 1
    )
    return DevicePlan(
        gpu=device,
        intra_op_threads=threads,
        tensorrt=settings.tensorrt,
        tensorrt_cache=settings.tensorrt_cache,
    )
