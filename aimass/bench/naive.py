"""The baseline: the plain Celery worker anyone would write first.

One task per image; the producer sends the preprocessed float32 tensor as base64 in
the JSON kwargs; the model is loaded once per worker process; no batching; Celery's
defaults everywhere else. Started by the benchmark as a user would start it::

    AIMASS_BENCH_MODEL_FILE=models/digits/1/model.onnx \\
        celery -A aimass.bench.naive worker --pool=solo

Like ``aimass.worker.main``, this module reads the environment when imported, because
Celery's command line imports the app by name.
"""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

import numpy as np
from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("naive", broker=REDIS_URL, backend=REDIS_URL)

_session: Any = None
_lock = threading.Lock()


def session() -> Any:
    """The process's ONNX Runtime session, created on first use with default options."""
    global _session
    with _lock:
        if _session is None:
            import onnxruntime as ort

            providers = ["CPUExecutionProvider"]
            if os.environ.get("AIMASS_BENCH_PROVIDER") == "cuda":
                providers.insert(0, "CUDAExecutionProvider")
                # As anyone following ONNX Runtime's install guide would: with CUDA from
                # NVIDIA's wheels, the CUDA provider does not load without this.
                preload = getattr(ort, "preload_dlls", None)
                if preload is not None:
                    preload()
            _session = ort.InferenceSession(
                os.environ["AIMASS_BENCH_MODEL_FILE"], providers=providers
            )
            print(f"naive worker: session on {', '.join(_session.get_providers())}", flush=True)
        return _session


@app.task(name="bench.naive.classify")
def classify(tensor: str, shape: list[int], top_k: int = 5) -> dict[str, Any]:
    """Top-k classes of one image given as a float32 tensor (base64, no batch dim)."""
    model = session()
    batch = np.frombuffer(base64.b64decode(tensor), dtype=np.float32).reshape([1, *shape])
    scores = model.run(None, {model.get_inputs()[0].name: batch})[0][0]
    top = np.argsort(-scores)[:top_k]
    return {
        "predictions": [{"index": int(i), "score": float(scores[i])} for i in top],
        "providers": model.get_providers(),
    }
