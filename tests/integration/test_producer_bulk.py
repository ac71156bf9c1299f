"""Bulk runs: thousands of inputs, a bound on jobs in flight, results in input order."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from aimass.producer.bulk import BulkRun
from aimass.producer.client import Client
from aimass.producer.submission import Submission
from aimass.protocol.errors import InvalidInput
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration

# Jobs submitted and not finished, counted atomically inside Redis: submission markers
# minus stored final results.
IN_FLIGHT_SCRIPT = """
local finished = 0
for _, key in ipairs(redis.call('KEYS', 'celery-task-meta-*')) do
  local meta = redis.call('GET', key)
  if meta and (string.find(meta, 'SUCCESS', 1, true) or string.find(meta, 'FAILURE', 1, true)
               or string.find(meta, 'REVOKED', 1, true)) then
    finished = finished + 1
  end
end
return #redis.call('KEYS', 'aimass:job:*') - finished
"""


class InFlightSampler(threading.Thread):
    """Samples the jobs in flight from Redis until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.redis = redis.Redis.from_url(url)
        self.samples: list[int] = []
        self._done = threading.Event()

    def run(self) -> None:
        count = self.redis.register_script(IN_FLIGHT_SCRIPT)
        while not self._done.is_set():
            self.samples.append(int(count()))
            time.sleep(0.005)

    def stop(self) -> list[int]:
        self._done.set()
        self.join(10)
        self.redis.close()
        return self.samples


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_map_keeps_at_most_max_in_flight_jobs_and_returns_input_order(
    redis_url: str, model_repository: Path, start_worker, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [row_image(i % 8) for i in range(300)]
    outcome: dict[str, Any] = {}
    client = Client(redis_url)

    def bulk() -> None:
        try:
            outcome["results"] = client.map(
                images, model="tiny", top_k=1, max_in_flight=8, progress=True, timeout=60
            )
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    runner = threading.Thread(target=bulk)
    runner.start()
    # No worker yet: exactly the bound is submitted, and no more.
    wait_for(lambda: client.queue_depth("tiny") == 8)
    time.sleep(0.3)
    assert client.queue_depth("tiny") == 8
    sampler = InFlightSampler(redis_url)
    sampler.start()
    start_worker(redis_url, model_repository, "--max-batch-size", "4")
    runner.join(60)
    samples = sampler.stop()
    client.close()
    assert "error" not in outcome, outcome.get("error")
    labels = [r["predictions"][0][0]["label"] for r in outcome["results"]]
    assert labels == [str(i % 8) for i in range(300)]
    assert samples[0] == 8  # sampling began with the bound reached and held
    assert max(samples) <= 8, f"in flight peaked at {max(samples)}"
    assert "300/300 jobs" in capsys.readouterr().err


def test_a_bulk_run_waits_at_a_full_queue_and_reports_failures_in_place(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    start_worker(redis_url, model_repository)
    with Client(redis_url, max_queue_depth=5) as client:
        submissions = [Submission.classify(row_image(i % 8), model="tiny") for i in range(60)]
        submissions[17] = Submission.classify(b"junk", model="tiny")
        run = BulkRun(
            client.redis,
            client._enqueuer,
            max_in_flight=20,
            progress=False,
            timeout=60,
            return_exceptions=True,
        )
        results = run.run(iter(submissions))
        assert run.peak_in_flight <= 20
        assert isinstance(results[17], InvalidInput)
        assert [r["predictions"][0][0]["label"] for i, r in enumerate(results) if i != 17] == [
            str(i % 8) for i in range(60) if i != 17
        ]
        with pytest.raises(InvalidInput):
            client.map([row_image(1), b"junk", row_image(2)], model="tiny", timeout=60)
