"""Faults with real processes: workers killed again and again under load, Redis killed and
restarted, model files damaged under a running worker, a batch that hangs, results that
expire. See docs/reliability.md for the guarantees these tests hold the code to."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from aimass.embedded_redis import RedisServer
from aimass.producer.client import Client, JobStatus
from aimass.producer.submission import Submission
from aimass.protocol.errors import ModelError, UnknownModel
from aimass.protocol.keys import result_key, submitted_key
from aimass.protocol.manifest import ModelKind
from tests.support.fleet import Fleet, ResultLog
from tests.support.hanging_model import hanging_classifier
from tests.support.processes import WorkerProcess
from tests.support.tiny_models import classifier_model, publish, row_image
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

FAST_RESTORE = {"AIMASS_VISIBILITY_TIMEOUT_S": "2"}


def labels_of(results: list[dict]) -> list[str]:
    return [r["predictions"][0][0]["label"] for r in results]


# -- workers killed under load ------------------------------------------------------------


def test_workers_killed_every_second_lose_no_job_and_answer_each_once(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> None:
    count = 1000
    # Slow batches (each waits out a 200 ms deadline, 20 jobs held per worker) keep jobs
    # in flight, so that every kill leaves some in the dead worker's hands.
    fleet = Fleet(
        redis_url,
        model_repository,
        tmp_path,
        ["--max-batch-size", "1000", "--max-queue-delay-ms", "200", "--concurrency", "20"],
        FAST_RESTORE,
    )
    store = redis.Redis.from_url(redis_url)
    kills, left_in_flight = 0, 0
    with ResultLog(redis_url) as published, Client(redis_url) as client:
        jobs = client.submit_many(
            Submission.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(count)
        )
        ids = [job.id for job in jobs]
        try:
            for _ in range(2):
                fleet.launch()
            deadline = time.monotonic() + 90
            while kills < 6 and len(published.published) < count and time.monotonic() < deadline:
                time.sleep(1.0)
                ready = [w for w in fleet.running() if w.ready()]
                if not ready:
                    continue  # both are starting: nothing to kill in the middle of work
                oldest = min(ready, key=lambda w: w.launched_at)
                oldest.kill()  # SIGKILL: no chance to store, acknowledge or requeue
                kills += 1
                left_in_flight += store.hlen("unacked")
                fleet.launch()
            published.wait_for(ids, timeout=max(5.0, deadline - time.monotonic()))
            time.sleep(0.5)  # a late duplicate publish would show up by now
        finally:
            fleet.stop_all()
        stored = client.wait(jobs, timeout=10)
    print(f"{kills} SIGKILLs; {left_in_flight} jobs in dead workers' hands in all")
    assert kills >= 3, f"only {kills} kills: the run ended too soon to test anything"
    assert left_in_flight > 0  # the kills really caught jobs in flight
    assert labels_of(stored) == [str(i % 8) for i in range(count)]
    # Each job was answered once as producers see it: one final record published,
    # and the stored record is that one (a second run never replaces the first answer).
    answers = {job_id: published.published[job_id] for job_id in ids}
    assert all(len(records) == 1 for records in answers.values()), [
        (j, len(r)) for j, r in answers.items() if len(r) != 1
    ][:5]
    assert [answers[job.id][0]["result"] for job in jobs] == stored
    assert store.hlen("unacked") == 0 and store.llen("aimass.tiny\x06\x163") == 0


# -- Redis killed and restarted under load ------------------------------------------------


class Producer(threading.Thread):
    """Submits jobs until stopped, keeping the ids whose submit returned; a submit that
    raised (Redis down) is counted and retried with a new job."""

    def __init__(self, client: Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.submitted: list[tuple[str, int]] = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            row = len(self.submitted) % 8
            try:
                job = self.client.classify(row_image(row), model="tiny", top_k=1)
            except redis.RedisError:
                self.failures += 1
                time.sleep(0.05)
                continue
            self.submitted.append((job.id, row))
            time.sleep(0.005)


def test_redis_killed_and_restarted_under_load_loses_no_submitted_job(
    model_repository: Path, tmp_path: Path, start_worker
) -> None:
    folder = tmp_path / "redis"
    server = RedisServer(folder, persistent=True).start()  # AOF, fsync on every write
    try:
        worker: WorkerProcess = start_worker(
            server.url, model_repository, "--max-queue-delay-ms", "20", **FAST_RESTORE
        )
        with Client(server.url) as client:
            producer = Producer(client)
            producer.start()
            wait_until(lambda: len(producer.submitted) > 100, 30, "jobs before the outage")
            server.kill()  # SIGKILL: only what the AOF holds survives
            wait_until(lambda: producer.failures > 5, 10, "submits failing while Redis is down")
            time.sleep(0.5)
            server = RedisServer(folder, server.port, persistent=True).start()
            before = len(producer.submitted)
            wait_until(
                lambda: len(producer.submitted) > before + 100,
                30,
                "submits to succeed again after the restart",
            )
            producer.stopping.set()
            producer.join(10)
            jobs = [client.job(job_id) for job_id, _ in producer.submitted]
            results = client.wait(jobs, timeout=60)
        assert labels_of(results) == [str(row) for _, row in producer.submitted]
        # The same worker process reconnected by itself and is healthy again.
        assert worker.alive()
        wait_until(
            lambda: bool((beat := worker.heartbeat()) and beat.ready),
            15,
            "the worker's heartbeat after the restart",
        )
        assert redis.Redis.from_url(server.url).hlen("unacked") == 0
    finally:
        server.stop()


# -- model files damaged under a running worker ------------------------------------------


def stage(
    tmp_path: Path,
    repository: Path,
    name: str,
    version: int,
    model: bytes,
    damage: Callable[[Path], None] | None = None,
) -> None:
    """Publish a version as the exporter does (written aside, renamed into place),
    damaged on the way if asked."""
    staged = publish(tmp_path / "staging" / str(version), name, version, ModelKind.classify, model)
    if damage is not None:
        damage(staged)
    staged.rename(repository / name / str(version))


def test_damaged_and_deleted_model_files_give_clear_errors_and_the_rest_serves(
    redis_url: str, model_repository: Path, tmp_path: Path, start_worker
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(model_repository, repository)
    worker = start_worker(redis_url, repository, AIMASS_RELOAD_INTERVAL_S="0.3")

    def flip_bytes(folder: Path) -> None:  # manifest sha256 no longer matches
        data = bytearray((folder / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "model.onnx").write_bytes(bytes(data))

    with Client(redis_url) as client:

        def classify(**kwargs: object) -> dict:
            return client.classify(row_image(6), model="tiny", top_k=1, **kwargs).result(timeout=30)

        def generator_serves() -> None:
            result = client.generate(model="tiny-gan", count=1, labels=[2]).result(timeout=30)
            assert result["labels"] == [2]

        # A newly published version whose file is damaged is refused, once, with a log
        # line; the old version keeps serving, and a job pinned to it gets ModelError.
        stage(tmp_path, repository, "tiny", 2, classifier_model(), damage=flip_bytes)
        wait_until(lambda: "could not load tiny v2" in worker.log(), 15, "the refusal")
        time.sleep(1.0)  # a few more reload rounds: no new log line for the same files
        assert worker.log().count("could not load tiny v2") == 1
        assert "damaged" in worker.log()
        assert classify()["version"] == 1
        with pytest.raises(ModelError, match=r"model file of 'tiny' v2 is damaged"):
            classify(version=2)
        generator_serves()

        # A version whose file is not ONNX at all (its checksum matching): refused too.
        stage(tmp_path, repository, "tiny", 3, b"not an onnx model")
        wait_until(lambda: "could not load tiny v3" in worker.log(), 15, "the refusal")
        assert classify()["version"] == 1
        with pytest.raises(ModelError, match="v3 could not be loaded by ONNX Runtime"):
            classify(version=3)

        # A good version is picked up; the old one stays available to pinned jobs...
        stage(tmp_path, repository, "tiny", 4, classifier_model(gain=2.0))
        wait_until(lambda: classify()["version"] == 4, 15, "version 4 to serve")
        assert classify(version=1)["version"] == 1
        # ...until its files are deleted: then a job pinned to it is UnknownModel.
        shutil.rmtree(repository / "tiny" / "1")
        with pytest.raises(UnknownModel, match="has no version 1"):
            classify(version=1)
        # Deleting the served version's file does not stop it: it runs from memory.
        (repository / "tiny" / "4" / "model.onnx").unlink()
        assert classify()["version"] == 4
        generator_serves()
    assert worker.alive()


# -- a batch that hangs --------------------------------------------------------------------


def test_a_hanging_batch_fails_its_jobs_at_the_time_limit_and_the_worker_goes_on(
    redis_url: str, model_repository: Path, tmp_path: Path, start_worker
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(model_repository, repository)
    publish(repository, "tiny-hang", 1, ModelKind.classify, hanging_classifier())
    worker = start_worker(redis_url, repository, AIMASS_JOB_TIME_LIMIT_S="1")
    black = row_image(0) * 0
    with Client(redis_url) as client:
        assert client.classify(black, model="tiny-hang").result(timeout=30)["version"] == 1
        started = time.monotonic()
        hanging = [client.classify(row_image(3), model="tiny-hang") for _ in range(3)]
        # Other models keep serving while tiny-hang's batch spins.
        others = [client.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(50)]
        assert labels_of(client.wait(others, timeout=30)) == [str(i % 8) for i in range(50)]
        for job in hanging:
            with pytest.raises(ModelError, match=r"'tiny-hang-v1' timed out after 1 s"):
                job.result(timeout=30)
        assert time.monotonic() - started < 10
        # The interrupted run returned, so the model serves again on the same thread.
        assert client.classify(black, model="tiny-hang").result(timeout=30)["version"] == 1
    assert "timed out after 1 s; interrupting its run" in worker.log()
    assert "abandon" not in worker.log()
    assert redis.Redis.from_url(redis_url).hlen("unacked") == 0
    assert worker.alive()


# -- results expire --------------------------------------------------------------------------


def test_results_and_submission_records_expire_after_the_result_ttl(
    redis_url: str, model_repository: Path, start_worker
) -> None:
    start_worker(redis_url, model_repository, AIMASS_RESULT_TTL_S="2")
    store = redis.Redis.from_url(redis_url)
    with Client(redis_url, result_ttl_s=2) as client:
        good = client.classify(row_image(1), model="tiny")
        bad = client.classify(row_image(1), model="tiny", version=7)
        assert good.result(timeout=30)["predictions"][0][0]["label"] == "1"
        with pytest.raises(UnknownModel):
            bad.result(timeout=30)
        keys = [key(job.id) for job in (good, bad) for key in (result_key, submitted_key)]
        ttls = [store.pttl(key) for key in keys]
        # Each has a TTL of at most 2 s (-2: gone already, on a slow machine; -1 would be
        # a key kept for ever).
        assert all(ttl == -2 or 0 < ttl <= 2000 for ttl in ttls), dict(zip(keys, ttls, strict=True))
        wait_until(lambda: store.exists(*keys) == 0, 10, "the records to expire")
        assert client.job(good.id).status() is JobStatus.unknown
