"""ONNX Runtime sessions: provider choice, thread sizing, creation.

Sessions are created inside the worker process that uses them (after any fork), never
in a parent: CUDA contexts and ORT thread pools do not survive a fork.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class DevicePlan:
    """Where this process runs its models: a GPU index, or the CPU (``gpu is None``)."""

    gpu: int | None
    intra_op_threads: int
    tensorrt: bool = False
    tensorrt_cache: Path | None = None


def gpu_count() -> int:
    """How many NVIDIA GPUs this process can use; 0 without a driver, a device or the
    CUDA provider (checked quietly, so that a CPU machine logs no CUDA errors)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return 0
    if CUDA not in ort.get_available_providers():
        return 0
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def cpu_threads_per_process(processes: int) -> int:
    """ORT intra-op threads for one of ``processes`` worker processes sharing the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, processes))


def providers_for(plan: DevicePlan) -> list[Any]:
    """The execution providers to ask for, best first; the CPU is always the last resort."""
    if plan.gpu is None:
        return [CPU]
    providers: list[Any] = []
    if plan.tensorrt:
        cache = str(plan.tensorrt_cache or Path(".trt-cache"))
        providers.append((TENSORRT, {
            "device_id": 0,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
        }))
    providers.append((CUDA, {"device_id": 0}))
    providers.append(CPU)
    return providers


def create_session(model: bytes | Path, plan: DevicePlan) -> Any:
    """An ``InferenceSession`` for one model, with threads sized for this process."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = plan.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning idle threads steal the cores that Celery, kombu and other worker
    # processes need; measured here as a 25-40 % loss with two processes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, sess_options=options, providers=providers_for(plan))
    requested = plan.gpu is not None
    if requested and CUDA not in session.get_providers():
        log.warning("GPU %s requested but the CUDA provider could not start; running on the CPU",
                    plan.gpu)
    return session


def release_free_memory() -> None:
    """Hand the heap memory that loading freed back to the system.

    ONNX Runtime parses the whole model file before it builds the session's weights,
    then frees the parsed copy; glibc keeps most of those pages in the process (58 MiB
    for AlexNet, measured) until asked to trim. Elsewhere (musl, macOS, Windows) this
    does nothing."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class SessionRunner:
    """Runs a session on whole batches; a run in progress on another thread can be asked
    to stop (ONNX Runtime checks ``RunOptions.terminate`` between nodes and loop
    iterations; a single long kernel runs to its end)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._options: dict[threading.Thread, Any] = {}

    def __call__(self, feeds: Any) -> list[np.ndarray]:
        import onnxruntime as ort

        options = ort.RunOptions()
        options.log_severity_level = 4  # the batcher logs a stopped run itself
        thread = threading.current_thread()
        self._options[thread] = options
        try:
            return list(self.session.run(None, dict(feeds), options))
        finally:
            self._options.pop(thread, None)

    def interrupt(self, thread: threading.Thread) -> None:
        options = self._options.get(thread)
        if options is not None:
            options.terminate = True
