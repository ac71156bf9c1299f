"""What the producer promises about the queue: priorities overtake, deadlines expire,
a job id runs once, and a full queue refuses more. Each test owns a database and
starts its worker only after the queue is set up, so nothing depends on timing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aimass.producer.bulk import BulkQueueFull
from aimass.producer.client import Client, JobStatus
from aimass.producer.submission import Submission
from aimass.protocol.contract import Priority
from aimass.protocol.errors import JobExpired, QueueFull
from aimass.protocol.keys import submitted_key
from aimass.protocol.records import ResultRecord
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


def finished_at(record: ResultRecord | None) -> datetime:
    assert record is not None and record.date_done is not None
    return datetime.fromisoformat(record.date_done)


def test_a_high_priority_job_overtakes_a_low_priority_backlog(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        backlog = client.submit_many(
            Submission.classify(row_image(i % 8), model="tiny", priority=Priority.low)
            for i in range(120)
        )
        normal = client.classify(row_image(2), model="tiny")
        urgent = client.classify(row_image(7), model="tiny", priority=Priority.high)
        assert client.redis.llen("aimass.tiny") == 1
        assert client.redis.llen("aimass.tiny\x06\x163") == 1
        assert client.redis.llen("aimass.tiny\x06\x166") == 120
        start_worker(redis_url, model_repository, "--concurrency", "2", "--max-batch-size", "2")
        client.wait([*backlog, normal, urgent], timeout=60)
        backlog_done = [finished_at(job.record()) for job in backlog]
        for overtaker in (urgent, normal):
            done = finished_at(overtaker.record())
            before = sum(1 for when in backlog_done if when < done)
            assert before < len(backlog) // 2, (
                f"{before} of {len(backlog)} low-priority jobs finished before {overtaker}"
            )
        assert urgent.result()["predictions"][0][0]["label"] == "7"


def test_a_job_not_started_by_its_deadline_expires(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        short = client.classify(row_image(1), model="tiny", deadline=0.3)
        past = client.generate(
            model="tiny-gan", count=1, deadline=datetime.now(UTC) - timedelta(seconds=1)
        )
        relaxed = client.classify(row_image(2), model="tiny", deadline=timedelta(hours=1))
        plain = client.classify(row_image(3), model="tiny")
        time.sleep(0.4)  # past the short deadline before any worker exists
        assert short.status() is JobStatus.queued
        start_worker(redis_url, model_repository)
        results = client.wait([short, past, relaxed, plain], timeout=30, return_exceptions=True)
        assert isinstance(results[0], JobExpired) and isinstance(results[1], JobExpired)
        assert results[2]["predictions"][0][0]["label"] == "2"
        assert results[3]["predictions"][0][0]["label"] == "3"
        assert short.status() is JobStatus.expired and past.status() is JobStatus.expired
        with pytest.raises(JobExpired, match="not started before its deadline"):
            client.job(short.id).result(timeout=5)
        assert client.queue_depth("tiny") == 0


def test_a_job_id_submitted_twice_runs_once(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    with Client(redis_url) as client:
        first = client.classify(row_image(4), model="tiny", job_id="order-42")
        again = client.classify(row_image(5), model="tiny", job_id="order-42")
        also = client.submit_many(
            [Submission.classify(row_image(6), model="tiny", job_id="order-42")] * 3
        )
        assert first.id == again.id == also[0].id == "order-42"
        assert client.queue_depth("tiny") == 1  # one message for four submits
        worker = start_worker(redis_url, model_repository)
        result = first.result(timeout=30)
        assert result["predictions"][0][0]["label"] == "4"  # the first submit's image
        stored = first.record()
        worker.stop()
        client.classify(row_image(5), model="tiny", job_id="order-42")
        assert client.queue_depth("tiny") == 0  # finished: a resubmit enqueues nothing
        assert client.job("order-42").record() == stored
        client.job("order-42").forget()  # forgetting the id frees it
        client.classify(row_image(5), model="tiny", job_id="order-42")
        assert client.queue_depth("tiny") == 1


def test_a_full_queue_refuses_new_jobs(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(redis_url, max_queue_depth=5) as client:  # no worker: nothing drains
        jobs = [
            client.classify(
                row_image(i), model="tiny", priority=Priority.low if i % 2 else Priority.normal
            )
            for i in range(5)
        ]
        with pytest.raises(QueueFull, match=r"aimass.tiny holds 5 jobs, at its bound of 5"):
            client.classify(row_image(6), model="tiny", priority=Priority.high)
        assert client.queue_depth("tiny") == 5
        assert client.job(jobs[0].id).status() is JobStatus.queued
        # A resubmit of a queued id is not a new job: it is not refused.
        assert client.classify(row_image(0), model="tiny", job_id=jobs[0].id).id == jobs[0].id
        # Other models have their own bound.
        client.generate(model="tiny-gan")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("AIMASS_MAX_QUEUE_DEPTH", "6")
    with Client.from_env() as client:
        client.classify(row_image(6), model="tiny")
        refused = Submission.classify(row_image(7), model="tiny", job_id="refused")
        with pytest.raises(QueueFull, match="bound of 6"):
            client.submit(refused)
        assert client.job("refused").status() is JobStatus.unknown  # may be retried
        assert not client.redis.exists(submitted_key("refused"))


def test_submit_many_stops_at_a_full_queue_and_says_what_went_in(redis_url: str) -> None:
    with Client(redis_url, max_queue_depth=8) as client:
        client.submit_many(Submission.classify(row_image(1), model="tiny") for _ in range(6))
        more = [Submission.classify(row_image(1), model="tiny") for _ in range(5)]
        with pytest.raises(BulkQueueFull, match=r"bound of 8;.*2 jobs were enqueued") as refused:
            client.submit_many(more)
        assert isinstance(refused.value, QueueFull)
        assert refused.value.job_ids == [s.job_id for s in more[:2]]  # the prefix that fit
        assert client.queue_depth("tiny") == 8
        assert client.job(more[2].job_id).status() is JobStatus.unknown


# A call of many jobs pushes their messages before its script, which takes back out those
# of duplicates and of jobs past the bound; a smaller one hands them to the script
# (producer/enqueue.py). Both must leave what a push of the accepted jobs alone would.
CALL_FORMS = pytest.mark.parametrize(
    "pushed_first", [1, 1 << 30], ids=["messages pushed first", "messages in the script"]
)


@CALL_FORMS
def test_a_bulk_call_leaves_exactly_its_new_jobs_messages_on_the_queue_in_order(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, pushed_first: int
) -> None:
    from aimass.producer import enqueue
    from aimass.producer.enqueue import WITHDRAWN
    from aimass.protocol.messages import TaskMessage, message_list

    def job(job_id: str) -> Submission:
        return Submission.classify(row_image(1), model="tiny", job_id=job_id)

    monkeypatch.setattr(enqueue, "PUSHED_FIRST", pushed_first)
    target = message_list("tiny", job("-").priority)  # the list of their priority
    with Client(redis_url, max_queue_depth=10) as client:
        client.submit(job("a0"))
        client.submit(job("a1"))
        client.submit(Submission.classify(row_image(1), model="tiny", priority=Priority.low))
        client.redis.lpush(target, b"another sender's message")
        calls = ["n0", "a0", "n1", "n2", "a1", "n3", "n4", "n5", "n6", "n7"]
        with pytest.raises(BulkQueueFull, match="bound of 10") as refused:
            client.submit_many(job(i) for i in calls)
        assert refused.value.job_ids == calls[:8]  # up to n5, which filled the queue
        queue = client.redis.lrange(target, 0, -1)
        assert WITHDRAWN not in queue
        ids = [TaskMessage.decode(raw).task_id if raw.strip()[:1] == b"{" else raw for raw in queue]
        expected = ["n5", "n4", "n3", "n2", "n1", "n0", b"another sender's message"]
        assert ids == [*expected, "a1", "a0"]  # the head first: LPUSHed, taken from the tail
        for unknown in ("n6", "n7"):
            assert client.job(unknown).status() is JobStatus.unknown
        # The same call again (a retry whose first reply was lost): every job is known.
        client.submit_many(job(i) for i in calls[:8])
        assert client.redis.lrange(target, 0, -1) == queue
        assert client.queue_depth("tiny") == 10


@CALL_FORMS
def test_a_bulk_call_onto_an_empty_queue_wakes_the_workers_and_one_onto_jobs_does_not(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, pushed_first: int
) -> None:
    from aimass.producer import enqueue
    from aimass.protocol.keys import PLAIN

    monkeypatch.setattr(enqueue, "PUSHED_FIRST", pushed_first)

    def jobs(count: int) -> list[Submission]:
        return [Submission.classify(row_image(1), model="tiny") for _ in range(count)]

    with Client(redis_url) as client, client.redis.pubsub() as wakes:
        wakes.subscribe(PLAIN.wake_channel("tiny", ""))
        assert wakes.get_message(timeout=5)["type"] == "subscribe"
        client.submit_many(jobs(5))  # onto an empty queue
        client.submit_many(jobs(6))  # onto one that holds jobs: its workers are awake
        woken = wakes.get_message(timeout=5)
        assert woken is not None and woken["data"] == b"5"  # the queue's depth after
        assert wakes.get_message(timeout=0.5) is None
        assert client.queue_depth("tiny") == 11
