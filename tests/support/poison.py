"""A worker that dies, SIGKILLed by its own model, on one kind of input: an image whose
every pixel is ``POISON_PIXEL`` (as an out-of-memory kill or a crash in a model's native
code would end it). Any other input is answered as usual.

Run as ``python -m tests.support.poison worker ...``: the arguments of ``aimass``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import numpy as np
import onnxruntime as ort

from aimass.cli import main

POISON_PIXEL = 77


class PoisonedSession(ort.InferenceSession):
    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        batch = next(iter(input_feed.values()))
        flat = np.asarray(batch).reshape(len(batch), -1)
        if np.isclose(flat, POISON_PIXEL / 255.0, atol=1e-6).all(axis=1).any():
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run(output_names, input_feed, run_options)


if __name__ == "__main__":
    ort.InferenceSession = PoisonedSession  # type: ignore[misc]
    sys.exit(main(sys.argv[1:]))
