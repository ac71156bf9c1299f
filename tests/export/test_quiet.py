"""A quiet export: ``aimass export zoo`` prints its own progress and none of TensorFlow's
C++ log lines (``E0000 ... node_def_util.cc``, ``W0000 ... meta_optimizer.cc``), which look
like errors and are not."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from aimass.export.quiet import is_tensorflow_noise
from tests.support.processes import aimass_command, child_env

pytestmark = pytest.mark.export

ABSL = re.compile(r"^[IWEF]0000 ")


@pytest.mark.parametrize(
    "line",
    [
        b"E0000 00:00:1796431071.016771   24281 node_def_util.cc:682] NodeDef mentions ...\n",
        b"W0000 00:00:1733353442.123456    1234 meta_optimizer.cc:966] remapper failed\n",
        b"I0000 00:00:1796431067.900807   24281 port.cc:153] oneDNN custom operations\n",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to\n",
    ],
)
def test_tensorflow_log_lines_are_noise(line: bytes) -> None:
    assert is_tensorflow_noise(line)


@pytest.mark.parametrize(
    "line",
    [
        b"digits epoch 1/2: loss 2.6311, train accuracy 0.1989 (5.7 s)\n",
        b"aimass: error: --only 'resnet': unknown model(s)\n",
        b"Traceback (most recent call last):\n",
    ],
)
def test_our_lines_are_not(line: bytes) -> None:
    assert not is_tensorflow_noise(line)


def test_export_zoo_prints_no_tensorflow_log_lines(tmp_path: Path) -> None:
    env = child_env("redis://127.0.0.1:9/0")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [
            *aimass_command(),
            "export",
            "zoo",
            "--only",
            "digits",
            "--quick",
            "--repository",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "digits epoch 1/" in output and "published digits version 1" in output
    noisy = [line for line in output.splitlines() if ABSL.match(line) or "absl::" in line]
    assert not noisy, "\n".join(noisy[:5])
