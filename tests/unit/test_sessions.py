"""ONNX Runtime sessions: one copy of the weights shared by a model's bucket sessions
(and what happens where it cannot be), CUDA loaded before anything touches the device,
the CUDA provider's options, and the errors that leave a CUDA context broken.

These run ONNX Runtime for real, on the CPU: the weights travel the same way there as
on a GPU (a buffer ONNX Runtime allocates, handed to each session as a DLPack view)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from aimass.worker import sessions
from aimass.worker.sessions import (
    CUDA,
    DeviceHealth,
    DevicePlan,
    SessionRunner,
    create_bucket_sessions,
    create_session,
    device_failure,
    providers_for,
)

pytestmark = pytest.mark.unit

WIDTH = 64  # a 64x64 float32 weight: 16 KiB, above SHARE_MIN_BYTES
CPU_PLAN = DevicePlan(gpu=None, intra_op_threads=1)


def matmul_model(path: Path) -> Path:
    """y = x @ W, with W all ones and a symbolic batch dimension N."""
    weight = numpy_helper.from_array(np.ones((WIDTH, WIDTH), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def first_output(session: ort.InferenceSession, size: int) -> float:
    return float(session.run(None, {"x": np.ones((size, WIDTH), np.float32)})[0][0, 0])


def test_sharing_bucket_sessions_run_on_the_very_memory_of_the_one_copy(tmp_path: Path) -> None:
    by_size, shared = create_bucket_sessions(matmul_model(tmp_path / "m.onnx"), CPU_PLAN, (1, 2, 4))
    assert shared.shared and shared.refused is None
    assert shared.nbytes == WIDTH * WIDTH * 4 and shared.batch_dims == ("N",)
    assert [first_output(by_size[size], size) for size in (1, 2, 4)] == [WIDTH] * 3
    # Write through the shared value: every session sees it at once, so none of them
    # runs on a copy of its own.
    shared.values["W"].update_inplace(np.full((WIDTH, WIDTH), 3, np.float32))
    assert [first_output(by_size[size], size) for size in (1, 2, 4)] == [3 * WIDTH] * 3


def test_unstoppable_runs_answer_as_the_runner_does_and_an_interrupt_never_reaches_them(
    tmp_path: Path,
) -> None:
    runner = SessionRunner(create_session(matmul_model(tmp_path / "m.onnx"), CPU_PLAN))
    run = runner.unstoppable()
    x = {"x": np.arange(3 * WIDTH, dtype=np.float32).reshape(3, WIDTH)}
    np.testing.assert_array_equal(run(x)[0], runner(x)[0])
    # A stop asked of this thread finds no run of its own in progress: the next runs of
    # either kind go through.
    runner.interrupt(threading.current_thread())
    np.testing.assert_array_equal(run(x)[0], runner(x)[0])


def test_sharing_needs_a_buffer_the_user_owns_and_a_device_copy_is_not_one() -> None:
    """What ``ortvalue_from_numpy(a, "cuda", 0)`` makes on a GPU, an OrtValue whose buffer
    ONNX Runtime allocated, is refused as an initializer; a DLPack view of it is taken."""
    owned = ort.OrtValue.ortvalue_from_shape_and_type([WIDTH, WIDTH], np.float32, "cpu", 0)
    with pytest.raises(Exception, match="must be owned by the user"):
        ort.SessionOptions().add_initializer("W", owned)
    view = sessions.device_view(np.ones((WIDTH, WIDTH), np.float32), CPU_PLAN)
    ort.SessionOptions().add_initializer("W", view)


def test_sharing_refused_leaves_each_session_its_own_copy_with_its_batch_size_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An ONNX Runtime that refuses the shared weights (as one before DLPack views
    would): each bucket session loads its own, still built for its one batch size, and
    the log says why, once at WARNING."""

    def refused_value(array: np.ndarray, plan: DevicePlan) -> ort.OrtValue:
        value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), array.dtype, "cpu", 0)
        value.update_inplace(array)
        return value  # ORT-owned: add_initializer refuses it

    monkeypatch.setattr(sessions, "device_view", refused_value)
    monkeypatch.setattr(sessions, "_sharing_refused_said", False)
    model = matmul_model(tmp_path / "m.onnx")
    with caplog.at_level(logging.INFO, logger=sessions.__name__):
        by_size, shared = create_bucket_sessions(model, CPU_PLAN, (1, 4))
        create_bucket_sessions(model, CPU_PLAN, (1, 4))
    assert not shared.shared and "owned by the user" in str(shared.refused)
    assert shared.batch_dims == ("N",)
    assert first_output(by_size[4], 4) == WIDTH
    with pytest.raises(Exception, match="index: 0 Got: 2 Expected: 4"):
        first_output(by_size[4], 2)  # fixed at 4: no other size runs on it
    said = [r.levelno for r in caplog.records if "could not share" in r.getMessage()]
    assert said == [logging.WARNING, logging.INFO]


def test_preload_of_cuda_comes_before_the_first_allocation_and_batch_dims_survive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU plan, CUDA's libraries are loaded before the weights are copied to the
    device. Here there is no GPU, so the copy fails, as a CUDA provider that cannot load
    would make it: the sessions still get their batch sizes fixed."""
    events: list[str] = []
    real_view = sessions.device_view
    monkeypatch.setattr(sessions, "_cuda_preloaded", False)
    monkeypatch.setattr(sessions, "preload_cuda_libraries", lambda: events.append("preload"))

    def view(array: np.ndarray, plan: DevicePlan) -> ort.OrtValue:
        events.append("allocate")
        return real_view(array, plan)

    monkeypatch.setattr(sessions, "device_view", view)
    gpu_plan = DevicePlan(gpu=0, intra_op_threads=1)
    by_size, shared = create_bucket_sessions(matmul_model(tmp_path / "m.onnx"), gpu_plan, (1, 4))
    assert events[:2] == ["preload", "preload"] and "allocate" in events
    assert events.index("allocate") > events.index("preload")
    assert shared.batch_dims == ("N",) and not shared.shared
    assert first_output(by_size[4], 4) == WIDTH
    with pytest.raises(Exception, match="Expected: 4"):
        first_output(by_size[4], 1)


def test_cuda_options_search_kernels_once_per_bucket_and_grow_arenas_as_asked() -> None:
    plan = DevicePlan(gpu=0, intra_op_threads=1)
    bucketed = dict(providers_for(plan, buckets=True)[0][1])
    dynamic = dict(providers_for(plan, buckets=False)[0][1])
    assert providers_for(plan)[0][0] == CUDA
    assert bucketed["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert dynamic["cudnn_conv_algo_search"] == "HEURISTIC"
    assert (
        bucketed["arena_extend_strategy"] == dynamic["arena_extend_strategy"] == "kSameAsRequested"
    )
    assert providers_for(CPU_PLAN) == ["CPUExecutionProvider"]  # the CPU: as before


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("CUDA failure 700: an illegal memory access was encountered ; GPU=0", "sticky"),
        ("CUDA failure 719: unspecified launch failure", "sticky"),
        ("CUDA failure 2: out of memory", "device"),
        ("CUDNN failure 5000: CUDNN_STATUS_EXECUTION_FAILED", "device"),
        ("Got invalid dimensions for input: x", None),
    ],
)
def test_sticky_cuda_errors_are_told_from_other_failures(message: str, kind: str | None) -> None:
    assert device_failure(RuntimeError(message)) == kind


def test_sticky_device_health_breaks_at_once_or_after_failures_in_a_row() -> None:
    health = DeviceHealth(in_a_row=3)
    assert not health.failed(RuntimeError("CUDNN failure 5000: x"))
    health.succeeded()
    assert not health.failed(RuntimeError("CUDNN failure 5000: x"))
    assert not health.failed(RuntimeError("CUDNN failure 5000: x"))
    assert not health.failed(ValueError("a bad input"))  # not the device's: count reset
    assert not health.failed(RuntimeError("CUDNN failure 5000: x"))
    assert health.broken is None
    assert health.failed(RuntimeError("CUDA failure 700: an illegal memory access"))
    assert "illegal memory access" in str(health.broken)
    assert health.failed(ValueError("anything, once broken"))
