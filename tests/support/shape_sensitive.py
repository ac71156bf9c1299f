"""A worker whose ONNX Runtime sessions cost what the CUDA provider's cost on one point:
a run whose input shape differs from that session's previous run takes 40 ms longer
(cuDNN's algorithm search, measured on an H200). Each session logs every shape it is
given to ``$AIMASS_TEST_SHAPE_LOG``, one JSON line per change, so that a test can tell
how often a real worker made its sessions pay.

Run as ``python -m tests.support.shape_sensitive worker ...``: the arguments of ``aimass``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import onnxruntime as ort

from aimass.cli import main

PENALTY_S = 0.040
LOG_ENV = "AIMASS_TEST_SHAPE_LOG"


class ShapeSensitiveSession(ort.InferenceSession):
    """A real session that sleeps ``PENALTY_S`` whenever the shape of its first input
    differs from its previous run's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        shape = tuple(next(iter(input_feed.values())).shape)
        with self._lock:
            changed = self._last is not None and shape != self._last
            first = self._last is None
            self._last = shape
        if changed:
            time.sleep(PENALTY_S)
        if changed or first:
            _record({"pid": os.getpid(), "session": id(self), "shape": shape, "changed": changed})
        return super().run(output_names, input_feed, run_options)


def _record(event: dict[str, Any]) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as log:  # one short line per write: appends do not interleave
            log.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    ort.InferenceSession = ShapeSensitiveSession  # type: ignore[misc]
    sys.exit(main(sys.argv[1:]))
