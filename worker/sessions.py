"""ONNX Runtime sessions: provider choice, thread sizing, creation.

Sessions are created inside the worker process that uses them (after any fork), never
in a parent: CUDA contexts and ORT thread pools do not survive a fork.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# Initializers smaller than this (shape constants, small biases) stay in each session:
# sharing them saves nothing, and some are read on the host even on a GPU.
SHARE_MIN_BYTES = 4096


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


def providers_for(plan: DevicePlan, buckets: bool = False) -> list[Any]:
    """The execution providers to ask for, best first; the CPU is always the last resort.

    ``buckets``: the sessions are one per batch size (worker/buckets.py). cuDNN's
    exhaustive algorithm search then pays off: it runs once per bucket, at warm-up, and
    picks the fastest kernels for that one shape. A session that sees every batch size
    would pay it again at each change of shape (~40 ms on an H200), so it gets the
    heuristic search instead (8-13 ms). Each of a model's 5-8 bucket sessions has an
    arena of its own: growing them by what is asked, not in powers of two, keeps each
    near its real need."""
    if plan.gpu is None:
        return [CPU]
    providers: list[Any] = []
    if plan.tensorrt:
        cache = str(plan.tensorrt_cache or Path(".trt-cache"))
        providers.append(
            (
                TENSORRT,
                {
                    "device_id": 0,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": True,
                },
            )
        )
    providers.append(
        (
            CUDA,
            {
                "device_id": 0,
                "cudnn_conv_algo_search": "EXHAUSTIVE" if buckets else "HEURISTIC",
                "arena_extend_strategy": "kSameAsRequested",
            },
        )
    )
    providers.append(CPU)
    return providers


_cuda_preloaded = False


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN before the first GPU session: onnxruntime-gpu installed with
    its ``[cuda,cudnn]`` extras (``aimass[gpu]``) finds them in NVIDIA's wheels this way,
    without a system CUDA or ``LD_LIBRARY_PATH``. Once per process; quiet where the
    libraries come from the system instead."""
    global _cuda_preloaded
    if _cuda_preloaded:
        return
    _cuda_preloaded = True
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # the system's libraries may still serve
        log.info("onnxruntime.preload_dlls() failed (%s); relying on the system's CUDA", exc)


@dataclass
class SharedWeights:
    """One copy of a model's large initializers, on the device its sessions run on, for
    every bucket session of the model to use instead of a copy of its own."""

    values: dict[str, Any] = field(default_factory=dict)  # name -> OrtValue (a view)
    # The symbolic batch dimension of each input ("N", "unk__12"), fixed per bucket.
    batch_dims: tuple[str, ...] = ()
    nbytes: int = 0  # of the values
    # Why the sessions hold copies of their own instead, when they do.
    refused: str | None = None

    @property
    def shared(self) -> bool:
        return bool(self.values) and self.refused is None


def _batch_dims(graph: Any) -> tuple[str, ...]:
    """The symbolic batch dimension of each of the graph's inputs ("N", "unk__12"): what a
    bucket session fixes to its size."""
    initializers = {tensor.name for tensor in graph.initializer}
    return tuple(
        dict.fromkeys(
            item.type.tensor_type.shape.dim[0].dim_param
            for item in graph.input
            if item.name not in initializers
            and item.type.tensor_type.shape.dim
            and item.type.tensor_type.shape.dim[0].dim_param
        )
    )


def device_view(array: np.ndarray, plan: DevicePlan) -> Any:
    """``array`` copied once onto the plan's device, as an OrtValue that
    ``SessionOptions.add_initializer`` takes and a session then uses in place.

    ONNX Runtime refuses an initializer whose buffer it owns itself ("Buffer containing
    the initializer must be owned by the user"), and every OrtValue it allocates on a
    GPU (``ortvalue_from_numpy(a, "cuda", 0)``) is such a value. So the copy is made in
    a buffer ONNX Runtime allocates, and what the sessions get is a DLPack view of that
    buffer: a tensor over memory it does not own, which it uses where it lies when the
    device matches the one the graph is planned on. The view holds a reference to the
    buffer, so the memory lives as long as any view or session does. The same steps on
    the CPU, so that a CPU test proves what a GPU does."""
    import onnxruntime as ort

    device, index = ("cpu", 0) if plan.gpu is None else ("cuda", 0)
    array = np.ascontiguousarray(array)
    owner = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), array.dtype, device, index)
    owner.update_inplace(array)
    return ort.OrtValue.from_dlpack(owner)


def share_weights(graph: Any, plan: DevicePlan) -> SharedWeights:
    """The graph's floating-point initializers of ``SHARE_MIN_BYTES`` or more, placed once
    on the plan's device, and its inputs' batch dimension names."""
    from onnx import numpy_helper

    if plan.gpu is not None:
        preload_cuda_libraries()  # before the first allocation on the device
    values = {}
    nbytes = 0
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f" and array.nbytes >= SHARE_MIN_BYTES:
            values[tensor.name] = device_view(array, plan)
            nbytes += array.nbytes
    return SharedWeights(values, _batch_dims(graph), nbytes)


_sharing_refused_said = False


def _own_copies(
    model: Path, buckets: Sequence[int], dims: tuple[str, ...], exc: Exception
) -> SharedWeights:
    """No sharing for this model: each bucket session loads the weights itself. Said
    once per process at WARNING (an ONNX Runtime too old for DLPack says it for every
    model), then at INFO."""
    global _sharing_refused_said
    reason = f"{type(exc).__name__}: {exc}"
    level = logging.INFO if _sharing_refused_said else logging.WARNING
    _sharing_refused_said = True
    log.log(
        level,
        "could not share %s's weights among its %d bucket sessions (%s); each "
        "holds a copy of its own: plan device memory for weights x buckets x processes",
        model,
        len(buckets),
        reason,
    )
    return SharedWeights(batch_dims=dims, refused=reason)


def create_bucket_sessions(
    model: Path, plan: DevicePlan, buckets: Sequence[int], share: bool = True
) -> tuple[dict[int, Any], SharedWeights]:
    """One session per bucket, each with its batch dimension fixed to its size, all using
    one copy of the weights. Should the weights not be shareable (an ONNX Runtime that
    refuses them, say), each session gets its own copy, with its batch dimension still
    fixed, and the log says so. The shared weights are returned so that the caller keeps
    them alive as long as the sessions."""
    import onnx

    if plan.gpu is not None:
        preload_cuda_libraries()  # before anything touches the device
    # Parsed once: the weights (when shared) and the batch dimensions come from it.
    graph = onnx.load(str(model), load_external_data=share).graph
    dims = _batch_dims(graph)
    try:
        if not share:  # for a comparison (aimass doctor)
            shared = SharedWeights(batch_dims=dims, refused="not asked to share")
        else:
            shared = share_weights(graph, plan)
    except Exception as exc:
        shared = _own_copies(model, buckets, dims, exc)
    sessions = {}
    for size in buckets:
        try:
            sessions[size] = create_session(model, plan, batch_size=size, shared=shared)
        except Exception as exc:
            if not shared.shared:
                raise
            shared = _own_copies(model, buckets, dims, exc)
            sessions = {
                s: create_session(model, plan, batch_size=s, shared=shared) for s in buckets
            }
            break
    return sessions, shared


def create_session(
    model: bytes | Path,
    plan: DevicePlan,
    batch_size: int | None = None,
    shared: SharedWeights | None = None,
) -> Any:
    """An ``InferenceSession`` for one model, with threads sized for this process.

    ``batch_size`` fixes the inputs' batch dimension (a bucket's session); ``shared``
    gives it initializers to use instead of its own copies."""
    import onnxruntime as ort

    if plan.gpu is not None:
        preload_cuda_libraries()
    options = ort.SessionOptions()
    options.intra_op_num_threads = plan.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning idle threads steal the cores that Celery, kombu and other worker
    # processes need; measured here as a 25-40 % loss with two processes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if shared is not None:
        if shared.shared:
            for name, value in shared.values.items():
                options.add_initializer(name, value)
            # Prepacking gives each session a rearranged copy of the weights of its own:
            # on the CPU, seven AlexNet buckets held 2.9 GiB with it and 0.6 without, at
            # the same speed (docs/performance.md).
            options.add_session_config_entry("session.disable_prepacking", "1")
        if batch_size is not None:
            for dim in shared.batch_dims:
                options.add_free_dimension_override_by_name(dim, batch_size)
    source = str(model) if isinstance(model, Path) else model
    providers = providers_for(plan, buckets=batch_size is not None)
    session = ort.InferenceSession(source, sess_options=options, providers=providers)
    requested = plan.gpu is not None
    if requested and CUDA not in session.get_providers():
        log.warning(
            "GPU %s requested but the CUDA provider could not start; running on the CPU", plan.gpu
        )
    return session


# CUDA errors after which the process's CUDA context is unusable: every later call fails
# the same way until the process exits ("sticky" errors, in CUDA's documentation).
# 214 ECC uncorrectable, 700 illegal address, 702 launch timeout, 709 context destroyed,
# 710 device-side assert, 714-718 hardware stack, illegal instruction, misaligned
# address, invalid address space, invalid program counter; 719 launch failure.
STICKY_CUDA_ERRORS = frozenset({214, 700, 702, 709, 710, 714, 715, 716, 717, 718, 719})
_CUDA_FAILURE = re.compile(r"\bCUDA failure (\d+)")
_DEVICE_FAILURE = re.compile(
    r"\b(CUDA|CUDNN|CUBLAS|CUFFT|CURAND) failure\b|CUDA error", re.IGNORECASE
)
# This many failed runs in a row, each failing with a CUDA library's error, and the
# context is taken for broken even when the error is not one of the sticky codes.
DEVICE_FAILURES_IN_A_ROW = 3


def device_failure(exc: BaseException) -> str | None:
    """``"sticky"`` for an error that leaves the CUDA context broken (a restart is the only
    cure), ``"device"`` for another CUDA, cuDNN or cuBLAS failure, ``None`` otherwise.
    ONNX Runtime raises them all as one exception type, so the message tells."""
    text = str(exc)
    code = _CUDA_FAILURE.search(text)
    if code and int(code.group(1)) in STICKY_CUDA_ERRORS:
        return "sticky"
    if _DEVICE_FAILURE.search(text):
        return "device"
    return None


class DeviceHealth:
    """Whether this process's device still works, from the failures of its runs: broken
    after a sticky CUDA error, or after ``DEVICE_FAILURES_IN_A_ROW`` runs in a row that
    failed with a CUDA library's error (a success in between clears the count)."""

    def __init__(self, in_a_row: int = DEVICE_FAILURES_IN_A_ROW) -> None:
        self.in_a_row = in_a_row
        self.failures = 0
        self.broken: str | None = None  # why, once broken
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, exc: BaseException) -> bool:
        """Count a failed run; True when the device is (now, or already) broken."""
        kind = device_failure(exc)
        with self._lock:
            if self.broken is not None:
                return True
            if kind is None:
                self.failures = 0
                return False
            self.failures += 1
            if kind == "sticky" or self.failures >= self.in_a_row:
                self.broken = f"{type(exc).__name__}: {exc}"
                return True
            return False


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
    iterations; a single long kernel runs to its end).

    Each thread keeps its run options from run to run (making them costs a few µs, as
    much as a decoding step's bookkeeping), until a run of it is asked to stop."""

    def __init__(self, session: Any) -> None:
        import onnxruntime as ort

        self.session = session
        self._new_options = ort.RunOptions
        self._options: dict[threading.Thread, Any] = {}  # each thread's, kept
        self._running: set[threading.Thread] = set()
        self._lock = threading.Lock()  # a stop asked for lands in the run it was meant for

    def __call__(self, feeds: Any) -> list[np.ndarray]:
        thread = threading.current_thread()
        options = self._options.get(thread)
        if options is None:
            options = self._options[thread] = self._new_options()
            options.log_severity_level = 4  # the batcher logs a stopped run itself
        with self._lock:
            self._running.add(thread)
        try:
            return self.session.run(None, feeds, options)
        finally:
            with self._lock:
                self._running.discard(thread)
                if options.terminate:  # stopped: the next run needs options of its own
                    del self._options[thread]

    def interrupt(self, thread: threading.Thread) -> None:
        with self._lock:
            if thread in self._running:
                self._options[thread].terminate = True

    def unstoppable(self) -> Callable[[Any], list[np.ndarray]]:
        """Runs of the session for one thread whose runs nothing stops (a decoding loop,
        which ends its sequences between steps): without ``interrupt``'s bookkeeping, a
        lock taken twice a run, about a µs of a decoding step's ~60 on the CPU."""
        options = self._new_options()
        options.log_severity_level = 4
        run = self.session.run
        return lambda feeds: run(None, feeds, options)
