"""How many jobs a worker holds at once (``AIMASS_CONCURRENCY``): by default twice the
largest batch of the models it serves, so that the next batch fills while one runs and
is settled; where it is given, a bound that no batch passes. The backlog is in the queue
before the worker starts, so that every take finds jobs waiting."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimass.producer.client import Client
from aimass.producer.submission import Submission
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration

BATCH = 100  # above the least a worker holds (64), so that only auto reaches it


@pytest.mark.parametrize(
    ("given", "most"), [((), BATCH), (("--concurrency", "64"), 64)], ids=["auto", "given"]
)
def test_a_worker_holds_twice_its_batch_so_that_full_batches_can_form(
    redis_url: str, model_repository: Path, start_worker, given: tuple[str, ...], most: int
) -> None:
    with Client(redis_url) as client:
        jobs = client.submit_many(
            Submission.classify(row_image(i % 8), model="tiny") for i in range(4 * BATCH)
        )
        start_worker(
            redis_url,
            model_repository,
            "--max-batch-size",
            str(BATCH),
            "--max-queue-delay-ms",
            "300",
            *given,
        )
        results = client.wait(jobs, timeout=120)
    assert [r["predictions"][0][0]["label"] for r in results] == [
        str(i % 8) for i in range(4 * BATCH)
    ]
    # Held 64, a batch of 100 never fills: each waits out its delay with what the worker
    # could take. Held twice 100, the first take alone fills one.
    assert max(r["timing"]["batch_size"] for r in results) == most
