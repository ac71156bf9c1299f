"""Bulk submission (aimass.producer.bulk): how jobs are split into calls."""

from __future__ import annotations

import pytest

from aimass.producer.bulk import chunks
from aimass.producer.submission import Submission
from aimass.protocol.contract import Priority

pytestmark = pytest.mark.unit


def test_bulk_chunks_split_by_list_count_and_size() -> None:
    low = [Submission.generate(model="g", priority=Priority.low) for _ in range(5)]
    high = [Submission.generate(model="g", priority=Priority.high) for _ in range(2)]
    sizes = [len(group) for group in chunks([*low, *high, low[0]], max_jobs=3)]
    assert sizes == [3, 2, 2, 1]
    one_each = chunks(low, max_bytes=len(low[0].message()) + 1)
    assert [len(group) for group in one_each] == [1] * 5
