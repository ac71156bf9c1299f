"""The progress line of bulk commands (aimass.producer.progress)."""

from __future__ import annotations

import io

import pytest

from aimass.producer.progress import Progress

pytestmark = pytest.mark.unit


def test_progress_line_shows_counts_rate_and_eta() -> None:
    stream = io.StringIO()
    progress = Progress(10, enabled=True, stream=stream)
    progress.advance(4, failed=1)
    line = progress.line(progress._started + 2.0)
    assert line.startswith("4/10 jobs [############------------------], 1 failed  2/s  ETA 3s")
    progress.close()
    assert stream.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress(3, enabled=False, stream=quiet).advance()
    assert quiet.getvalue() == ""
