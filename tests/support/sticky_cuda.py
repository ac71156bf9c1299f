"""A worker whose sessions break the way a CUDA context breaks: once the file named by
``$AIMASS_TEST_STICKY_TRIGGER`` appears, the first process to run a batch takes it (the
file goes) and from then on every run of every session in that process fails with the
error ONNX Runtime raises after an illegal memory access, as a real sticky CUDA error
does. The other processes, and the broken one once started afresh, run normally.

Run as ``python -m tests.support.sticky_cuda worker ...``: the arguments of ``aimass``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import onnxruntime as ort

from aimass.cli import main

TRIGGER_ENV = "AIMASS_TEST_STICKY_TRIGGER"
ERROR = (
    "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was "
    "encountered ; GPU=0 ; expr=cudaStreamSynchronize(stream)"
)
_broken = False


class StickySession(ort.InferenceSession):
    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        global _broken
        trigger = os.environ.get(TRIGGER_ENV)
        if not _broken and trigger:
            try:
                os.unlink(trigger)  # only one process wins it
                _broken = True
            except FileNotFoundError:
                pass
        if _broken:
            raise RuntimeError(ERROR)
        return super().run(output_names, input_feed, run_options)


if __name__ == "__main__":
    ort.InferenceSession = StickySession  # type: ignore[misc]
    sys.exit(main(sys.argv[1:]))
