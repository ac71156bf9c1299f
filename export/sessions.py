"""ONNX Runtime sessions for export-time checks (parity, quality, throughput).

Always the CPU provider: parity is defined against ONNX Runtime's CPU kernels, and the
GPU build of onnxruntime would otherwise try CUDA first and warn where there is none.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def cpu_session(model: bytes | Path, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A CPU session; ``intra_op_threads`` 0 lets ONNX Runtime pick (one per core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3  # errors only; export prints its own progress
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
