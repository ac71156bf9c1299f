"""Small statistics for the benchmark: percentiles and medians of rounds."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, interpolated linearly."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(ordered: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, mean and max of sorted latencies (NaN when there are none)."""
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "mean": statistics.fmean(ordered) if ordered else math.nan,
        "max": ordered[-1] if ordered else math.nan,
    }


def cdf(ordered: Sequence[float]) -> list[float]:
    """The 0th to 100th percentiles: enough to draw a distribution again."""
    return [percentile(ordered, q) for q in range(101)] if ordered else []


def median_by_key(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median of the rounds that have a number for it."""
    keys = dict.fromkeys(k for r in rounds for k in r)
    out: dict[str, Any] = {}
    for key in keys:
        values = [
            r[key] for r in rounds if isinstance(r.get(key), int | float) and not math.isnan(r[key])
        ]
        out[key] = statistics.median(values) if values else None
    return out


def sum_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Tallies keyed by sizes written as strings (as in JSON: batch sizes, buckets), added
    up and ordered by size."""
    total: Counter[int] = Counter()
    for count in counts:
        total.update({int(size): n for size, n in count.items()})
    return {str(size): n for size, n in sorted(total.items())}
