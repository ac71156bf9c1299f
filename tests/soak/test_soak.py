"""A bounded soak: mixed classify and generate jobs, good and bad, for AIMASS_SOAK_SECONDS
(default 600), while one worker is restarted again and again (SIGTERM and SIGKILL in
turn) and another runs throughout. Every job must be answered once and correctly, and
the steady worker's memory must stay flat: its RSS after warm-up may not grow by 20 %.

No loss is allowed: every pop records its message as unacknowledged in the same atomic
call, so a killed worker's jobs all come back.

Run it with ``python -m pytest -m soak -s`` (it is not part of the default run);
AIMASS_SOAK_RATE caps the jobs per second (default 400).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from aimass.producer.client import Client, Job
from aimass.producer.submission import Submission
from aimass.protocol.codecs import encode_image
from aimass.protocol.errors import AimassError, InvalidInput, InvalidJob, JobTimeout, UnknownModel
from aimass.protocol.keys import result_key
from tests.support import raw_messages as raw
from tests.support.fleet import Fleet, ResultLog
from tests.support.tiny_models import row_image

SECONDS = float(os.environ.get("AIMASS_SOAK_SECONDS", "600"))
# Jobs a second, at most: enough to exercise everything, not so many that a shared
# machine is saturated for the whole run.
RATE = float(os.environ.get("AIMASS_SOAK_RATE", "400"))
RESULT_TTL_S = 120  # results expire during the run, so that Redis's memory is flat too
WORKER_ENV = {"AIMASS_VISIBILITY_TIMEOUT_S": "5", "AIMASS_RESULT_TTL_S": str(RESULT_TTL_S)}
RESTART_EVERY_S = min(20.0, SECONDS / 6)  # a few restarts of each kind
SAMPLE_EVERY_S = 5.0
MAX_GROWTH = 0.20

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 600)]

IMAGES = [encode_image(row_image(row)) for row in range(8)]
DAMAGED = b"\x89PNG\r\n\x1a\n" + b"\0" * 40


@dataclass
class Expected:
    """What a job's answer must be: a label list, labels generated, or an error type."""

    labels: list[str] | None = None
    generated: list[int] | None = None
    error: type[AimassError] | None = None


@dataclass
class Tally:
    jobs: Counter[str] = field(default_factory=Counter)
    raw_messages: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes)
    redis_memory: list[tuple[float, int]] = field(default_factory=list)
    churn_rss: list[int] = field(default_factory=list)  # at the end of each life
    lost: dict[str, str] = field(default_factory=dict)  # job id -> where it was last seen


def one_round(index: int) -> list[tuple[Submission, Expected, str]]:
    """About a hundred jobs: mostly good classify and generate jobs, some bad ones."""
    jobs: list[tuple[Submission, Expected, str]] = []
    for i in range(70):
        rows = [(index + i + k) % 8 for k in range(1 + i % 4)]
        jobs.append(
            (
                Submission.classify([IMAGES[r] for r in rows], model="tiny", top_k=2),
                Expected(labels=[str(r) for r in rows]),
                "classify",
            )
        )
    for i in range(20):
        labels = [(index + i + k) % 8 for k in range(1 + i % 4)]
        jobs.append(
            (
                Submission.generate(
                    model="tiny-gan",
                    count=len(labels),
                    labels=labels,
                    format="png" if i % 2 else "tensor",
                ),
                Expected(generated=labels),
                "generate",
            )
        )
    for _ in range(5):
        jobs.append(
            (Submission.classify(DAMAGED, model="tiny"), Expected(error=InvalidInput), "bad image")
        )
    for _ in range(3):
        jobs.append(
            (
                Submission.classify(IMAGES[1], model="tiny", version=9),
                Expected(error=UnknownModel),
                "unknown version",
            )
        )
    for _ in range(2):
        jobs.append(
            (
                Submission.generate(model="tiny-gan", count=1, labels=[9]),
                Expected(error=InvalidInput),
                "bad label",
            )
        )
    return jobs


def check(result: Any, expected: Expected) -> None:
    if expected.error is not None:
        assert isinstance(result, expected.error), result
    elif expected.labels is not None:
        assert [p[0]["label"] for p in result["predictions"]] == expected.labels, result
    else:
        assert result["labels"] == expected.generated and len(result["images"]) == len(
            expected.generated
        ), result


def last_seen(store: redis.Redis, job_id: str) -> str:
    """Where an unanswered job is: its stored state, kombu's unacked hash, a queue, or
    nowhere (popped by a BRPOP whose worker died before recording it)."""
    meta = store.get(result_key(job_id))
    if meta is not None:
        return f"result {meta[:60]!r}"
    needle = job_id.encode()
    if any(needle in value for _, value in store.hscan_iter("unacked")):
        return "unacked"
    for name in store.scan_iter("aimass.tiny*"):
        if store.type(name) == b"list" and any(needle in m for m in store.lrange(name, 0, -1)):
            return f"queued in {name.decode()}"
    return "popped, never recorded"


def results_of(store: redis.Redis, client: Client, jobs: list[Job], tally: Tally) -> list[Any]:
    """Each job's result or typed error; None for a job lost (recorded in the tally)."""
    with contextlib.suppress(JobTimeout):
        client.wait(jobs, timeout=60, return_exceptions=True)
    results: list[Any] = []
    for job in jobs:
        if not job.done():
            tally.lost[job.id] = last_seen(store, job.id)
            results.append(None)
            continue
        try:
            results.append(job.result(timeout=0))
        except AimassError as error:
            results.append(error)
    return results


def raw_garbage(store: redis.Redis, tally: Tally) -> list[str]:
    """A few malformed messages straight onto the queue; returns the ids that must get a
    typed failure."""
    ids = [raw.new_id() for _ in range(2)]
    store.lpush(
        "aimass.tiny",
        b"not a message",
        raw.encode(raw.envelope({"model": "tiny", "inputs": "x"}, job_id=ids[0])),
        raw.encode(raw.envelope(body=b"\xc1", content_type="application/x-msgpack", job_id=ids[1])),
    )
    tally.raw_messages += 3
    return ids


class Churn(threading.Thread):
    """Restarts one worker every RESTART_EVERY_S seconds, by SIGTERM and SIGKILL in turn."""

    def __init__(self, fleet: Fleet, tally: Tally) -> None:
        super().__init__(daemon=True)
        self.fleet, self.tally = fleet, tally
        self.stopping = threading.Event()
        self.worker = fleet.launch()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.worker.wait_ready(60)
            kill = False
            while not self.stopping.wait(RESTART_EVERY_S):
                self.tally.churn_rss.append(psutil.Process(self.worker.pid).memory_info().rss)
                if kill:
                    self.worker.kill()
                else:
                    assert self.worker.stop(timeout=60) == 0, self.worker.log()
                self.tally.restarts["SIGKILL" if kill else "SIGTERM"] += 1
                kill = not kill
                self.worker = self.fleet.launch()
                self.worker.wait_ready(60)
        except BaseException as exc:  # reported by the test
            self.error = exc


class Sampler(threading.Thread):
    def __init__(self, pid: int, store: redis.Redis, tally: Tally) -> None:
        super().__init__(daemon=True)
        self.process, self.store, self.tally = psutil.Process(pid), store, tally
        self.stopping = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stopping.is_set():
            now = time.monotonic() - self.started
            self.tally.rss.append((now, self.process.memory_info().rss))
            self.tally.redis_memory.append((now, int(self.store.info("memory")["used_memory"])))
            self.stopping.wait(SAMPLE_EVERY_S)


def median_between(samples: list[tuple[float, int]], start: float, end: float) -> float:
    inside = [v for t, v in samples if start <= t <= end]
    if not inside:  # a short run: the sample nearest the window
        inside = [min(samples, key=lambda s: abs(s[0] - (start + end) / 2))[1]]
    return statistics.median(inside)


def report(tally: Tally, elapsed: float) -> dict[str, float]:
    # Warm-up is the first fifth of the run; the baseline is the next tenth, compared
    # with the last tenth.
    warm = elapsed * 0.2
    baseline = median_between(tally.rss, warm, elapsed * 0.3)
    final = median_between(tally.rss, elapsed * 0.9, elapsed + 1)
    peak = max(v for _, v in tally.rss)
    mib = 2**20
    print(
        f"\nsoak: {elapsed:.0f} s, {sum(tally.jobs.values())} jobs "
        f"({dict(tally.jobs)}), {tally.raw_messages} raw malformed messages, "
        f"restarts {dict(tally.restarts)}"
    )
    print(
        f"steady worker RSS: start {tally.rss[0][1] / mib:.1f} MiB, after warm-up "
        f"({warm:.0f} s) {baseline / mib:.1f} MiB, end {final / mib:.1f} MiB, peak "
        f"{peak / mib:.1f} MiB: growth after warm-up {100 * (final / baseline - 1):+.1f} %"
    )
    print(
        "RSS by minute (MiB): "
        + ", ".join(f"{v / mib:.1f}" for t, v in tally.rss if int(t) % 60 < SAMPLE_EVERY_S)
    )
    print(
        "Redis used_memory by minute (MiB): "
        + ", ".join(f"{v / mib:.1f}" for t, v in tally.redis_memory if int(t) % 60 < SAMPLE_EVERY_S)
    )
    if tally.churn_rss:
        print(
            f"restarted worker RSS at each restart (MiB): "
            f"{', '.join(f'{v / mib:.0f}' for v in tally.churn_rss)}"
        )
    return {"baseline": baseline, "final": final}


def test_soak_mixed_jobs_with_restarts_memory_stays_flat(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    fleet = Fleet(redis_url, model_repository, tmp_path, [], WORKER_ENV)
    tally = Tally()
    store = redis.Redis.from_url(redis_url)
    steady = fleet.launch()
    steady.wait_ready(60)
    churn = Churn(fleet, tally)
    sampler = Sampler(steady.pid, store, tally)
    started = time.monotonic()
    try:
        churn.start()
        sampler.start()
        with (
            ResultLog(redis_url, keep=False) as published,
            Client(redis_url, result_ttl_s=RESULT_TTL_S) as client,
        ):
            index = 0
            while time.monotonic() - started < SECONDS:
                round_started = time.monotonic()
                planned = one_round(index)
                jobs = client.submit_many(s for s, _, _ in planned)
                typed_ids = raw_garbage(store, tally)
                results = results_of(store, client, jobs, tally)
                for (_, expected, kind), result in zip(planned, results, strict=True):
                    if result is not None:
                        check(result, expected)
                        tally.jobs[kind] += 1
                for job in results_of(store, client, [client.job(i) for i in typed_ids], tally):
                    assert job is None or isinstance(job, InvalidJob), job
                assert churn.error is None, churn.error
                assert steady.alive(), steady.log()
                index += 1
                time.sleep(max(0.0, len(planned) / RATE - (time.monotonic() - round_started)))
            elapsed = time.monotonic() - started
            time.sleep(1.0)
            # Each job answered once as producers see it: one final record published.
            repeats = [
                job_id for job_id, records in published.published.items() if len(records) != 1
            ]
            assert not repeats, repeats[:5]
    finally:
        churn.stopping.set()
        sampler.stopping.set()
        churn.join(120)
        sampler.join(10)
        fleet.stop_all()
    assert churn.error is None, churn.error
    figures = report(tally, elapsed)
    print(f"unanswered: {len(tally.lost)} {tally.lost}")
    assert tally.restarts["SIGKILL"] >= 1 and tally.restarts["SIGTERM"] >= 1
    assert not tally.lost, tally.lost
    assert figures["final"] < figures["baseline"] * (1 + MAX_GROWTH)
