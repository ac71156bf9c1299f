"""``aimass demo``: the whole system end to end on one machine.

Brings a local stack up (embedded Redis, the digits zoo trained and exported on first
run, workers), then acts as a producer: classifies every held-out digit through the
queue, generates images of each class and classifies those too, prints what it saw,
writes the generated grid as a PNG, and tears down what it started.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aimass.protocol.codecs import encode_image

GENERATED_PER_CLASS = 10


@dataclass
class Tally:
    """What the producer saw: latencies, batch sizes, failures."""

    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    jobs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, result: dict[str, Any] | None, error: str | None) -> None:
        with self.lock:
            self.jobs += 1
            self.latencies_ms.append(seconds * 1000.0)
            if result is not None:
                self.batch_sizes[result["timing"]["batch_size"]] += 1
            if error is not None:
                self.failures.append(error)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))] if ordered else 0.0


def closed_loop(
    work: list[Callable[[], Any]], concurrency: int, tally: Tally, timeout: float
) -> list[Any]:
    """Run ``work`` (each item submits one job and waits for it) with ``concurrency``
    jobs in flight, recording each job's submit-to-result latency."""
    results: list[Any] = [None] * len(work)
    cursor = iter(range(len(work)))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            started = time.monotonic()
            try:
                result = work[index]()
                results[index] = result
                tally.record(time.monotonic() - started, result, None)
            except Exception as exc:
                tally.record(time.monotonic() - started, None, f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results


def run_demo(
    client: Any,
    grid_path: Path,
    concurrency: int = 16,
    out: Any = sys.stdout,
    timeout: float = 60.0,
) -> int:
    """The producer side of the demo; returns the exit code (0: every job answered)."""
    from aimass.export.data import load_digits_split

    split = load_digits_split()
    tally = Tally()
    started = time.monotonic()

    def classify_one(png: bytes) -> Callable[[], Any]:
        return lambda: client.classify(png, model="digits", top_k=1).result(timeout=timeout)

    pngs = [encode_image(image) for image in split.test_images]
    print(
        f"Classifying {len(pngs)} held-out digits through the queue ({concurrency} in flight)...",
        file=out,
        flush=True,
    )
    answers = closed_loop([classify_one(png) for png in pngs], concurrency, tally, timeout)
    predicted = [_top_label(a) for a in answers]
    correct = sum(p == str(label) for p, label in zip(predicted, split.test_labels, strict=True))

    print("Generating 10 images of each class and classifying them...", file=out, flush=True)

    def generate(label: int) -> Callable[[], Any]:
        return lambda: client.generate(
            model="digits-gan",
            count=GENERATED_PER_CLASS,
            labels=[label] * GENERATED_PER_CLASS,
            seed=label,
        ).result(timeout=timeout)

    generated = closed_loop([generate(label) for label in range(10)], concurrency, tally, timeout)
    images = [
        (label, image)
        for label, result in enumerate(generated)
        if result
        for image in result["images"]
    ]
    checks = closed_loop(
        [classify_one(encode_image(image)) for _, image in images], concurrency, tally, timeout
    )
    agreed = sum(_top_label(c) == str(label) for (label, _), c in zip(images, checks, strict=True))
    elapsed = time.monotonic() - started

    grid = _grid([image for _, image in images], columns=GENERATED_PER_CLASS)
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(grid_path)
    _report(out, tally, elapsed, correct, len(pngs), agreed, len(images), grid_path)
    expected_jobs = len(pngs) + 10 + 10 * GENERATED_PER_CLASS
    ok = not tally.failures and tally.jobs == expected_jobs and len(images) == 100
    if not ok:
        print(
            f"FAILED: {len(tally.failures)} of {tally.jobs} jobs failed "
            f"(expected {expected_jobs} answers): {tally.failures[:3]}",
            file=out,
        )
    return 0 if ok else 1


def _top_label(result: dict[str, Any] | None) -> str | None:
    return result["predictions"][0][0]["label"] if result else None


def _grid(images: Iterable[Image.Image], columns: int, scale: int = 3) -> Image.Image:
    tiles = [np.asarray(image.convert("L")) for image in images]
    if not tiles:
        return Image.new("L", (1, 1))
    height, width = tiles[0].shape
    rows = (len(tiles) + columns - 1) // columns
    canvas = np.zeros((rows * (height + 2), columns * (width + 2)), np.uint8)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        canvas[
            r * (height + 2) + 1 : r * (height + 2) + 1 + height,
            c * (width + 2) + 1 : c * (width + 2) + 1 + width,
        ] = tile
    picture = Image.fromarray(canvas)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def _report(
    out: Any,
    tally: Tally,
    elapsed: float,
    correct: int,
    total: int,
    agreed: int,
    generated: int,
    grid_path: Path,
) -> None:
    sizes = ", ".join(f"{size}: {count}" for size, count in sorted(tally.batch_sizes.items()))
    mean_batch = sum(s * c for s, c in tally.batch_sizes.items()) / max(
        1, sum(tally.batch_sizes.values())
    )
    lines = [
        "",
        "aimass demo summary",
        f"  test accuracy through the queue   {correct / max(1, total):.4f} "
        f"({correct}/{total} held-out digits)",
        f"  class agreement of generated      {agreed / max(1, generated):.4f} "
        f"({agreed}/{generated}, judged by the digits classifier)",
        f"  jobs answered                     {tally.jobs - len(tally.failures)}/{tally.jobs} "
        f"in {elapsed:.1f} s = {tally.jobs / max(elapsed, 1e-9):.0f} jobs/s",
        f"  latency p50 / p95 / p99           {tally.percentile(50):.1f} / "
        f"{tally.percentile(95):.1f} / {tally.percentile(99):.1f} ms "
        f"(mean {statistics.fmean(tally.latencies_ms or [0]):.1f})",
        f"  batch sizes seen (size: jobs)     {sizes} (mean {mean_batch:.1f})",
        f"  generated grid                    {grid_path.resolve()} (rows: classes 0-9)",
    ]
    print("\n".join(lines), file=out, flush=True)
