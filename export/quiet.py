"""TensorFlow's own log lines kept off the terminal while aimass trains and converts.

TensorFlow's C++ side writes absl-format lines to stderr (``I0000 00:00:... port.cc:153]
oneDNN custom operations are on``, ``E0000 ... node_def_util.cc ...
use_unbounded_threadpool``, ``W0000 ... meta_optimizer.cc ... remapper failed``) that look
like errors and are not. Those written before absl is initialised ignore
``TF_CPP_MIN_LOG_LEVEL``, so the only switch that holds is the file descriptor: while
``quiet_tensorflow()`` is active, stderr goes through a filter that drops those lines and
passes every other line on (aimass's own progress included). A user who sets
``TF_CPP_MIN_LOG_LEVEL`` gets TensorFlow's lines as that level says, unfiltered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

# An absl log line: severity and date, time, thread, file:line].
ABSL_LINE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"


def is_tensorflow_noise(line: bytes) -> bool:
    return bool(ABSL_LINE.match(line)) or line.startswith(ABSL_PREAMBLE)


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Hide TensorFlow's C++ and Python log lines for the duration; keep the rest."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:  # the user chose what to see
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # what TensorFlow honours: INFO, WARNING
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with _filtered_stderr():
        yield


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, original), daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the thread sees its end
        thread.join(timeout=5)
        os.close(original)


def _forward(read_end: int, original: int) -> None:
    with os.fdopen(read_end, "rb") as lines:
        for line in lines:
            if not is_tensorflow_noise(line):
                os.write(original, line)
