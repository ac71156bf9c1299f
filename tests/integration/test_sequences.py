"""Sequence jobs on a real worker and a real Redis, with a real (small) ONNX step model:
per-step batching (joins and leaves mid-batch), reproducible sampling, streaming,
cancel, and a worker killed mid-sequence."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import redis

from aimass.producer.aio import AsyncClient
from aimass.producer.client import Client, Job, JobStatus
from aimass.producer.streams import StreamRestarted
from aimass.producer.submission import Submission
from aimass.protocol.errors import InvalidInput, JobCancelled, PayloadTooLarge
from aimass.protocol.keys import RUNS_HASH, stream_key
from aimass.protocol.streams import StreamEntry, StreamEvent
from tests.support.processes import aimass_command, child_env
from tests.support.sequence_model import VOCABULARY, publish_sequence_model, reference_greedy

pytestmark = pytest.mark.integration

MODEL = "tiny-rnn"


@pytest.fixture(scope="module")
def sequence_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sequence-models")
    publish_sequence_model(root)
    return root


def first_piece(job: Job) -> str:
    """Wait for a streaming job's first piece of text: it is decoding."""
    return next(iter(job.stream(timeout=60)))


def entries(url: str, job_id: str) -> list[StreamEntry]:
    client = redis.Redis.from_url(url)
    return [StreamEntry.decode(fields) for _, fields in client.xrange(stream_key(job_id))]


def test_sequence_a_short_job_sent_after_a_long_one_finishes_first(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    start_worker(redis_url, sequence_repository)
    with Client(redis_url) as client:
        # Greedy: this model then never writes its end token; it runs to max_tokens.
        long = client.sequence("def ", model=MODEL, max_tokens=60000, temperature=0, stream=True)
        first_piece(long)  # the long one is decoding
        # Its run was counted before its first step (the poison cap's count).
        assert redis.Redis.from_url(redis_url).hget(RUNS_HASH, long.id) == b"1"
        short = client.sequence("x", model=MODEL, max_tokens=5, seed=1)
        answer = short.result(timeout=60)
        assert long.status() is JobStatus.queued  # still decoding: no result yet
        assert answer["tokens"] <= 5 and answer["finish_reason"] in ("length", "end")
        assert answer["timing"]["batch_size"] == 2  # it shared its steps with the long one
        whole = long.result(timeout=120)
    assert whole["finish_reason"] == "length" and whole["tokens"] == 60000


def test_sequence_seeds_reproduce_whatever_shares_the_steps(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    start_worker(redis_url, sequence_repository)
    options = {"max_tokens": 80, "temperature": 0.9, "top_k": 40, "top_p": 0.95, "seed": 7}
    with Client(redis_url) as client:
        alone = client.sequence("def main(", model=MODEL, **options).result(timeout=60)
        mates = [
            Submission.sequence(f"{i} x", model=MODEL, max_tokens=20 + i, seed=i) for i in range(24)
        ]
        mates.insert(11, Submission.sequence("def main(", model=MODEL, **options))
        results = client.wait(client.submit_many(mates), timeout=120)
        greedy = client.sequence("class ", model=MODEL, max_tokens=60, temperature=0)
        greedy_text = greedy.result(timeout=60)["text"]
    again = results[11]
    assert again["text"] == alone["text"] and again["seed"] == 7
    assert max(r["timing"]["batch_size"] for r in results) > 1  # they shared steps
    assert len({r["text"] for r in results}) > 20  # different seeds, different text
    assert greedy_text == reference_greedy("class ", 60)  # the worker's math is the model's


def test_sequence_stream_yields_the_text_with_nothing_lost_or_repeated(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    start_worker(redis_url, sequence_repository)
    expected = reference_greedy("import ", 200)
    stop = expected[120:124]  # split across tokens: one character each
    with Client(redis_url) as client:
        jobs = [
            client.sequence(f"{i} = ", model=MODEL, max_tokens=300, seed=i, stream=True)
            for i in range(8)
        ]
        stopped = client.sequence(
            "import ", model=MODEL, max_tokens=200, temperature=0, stop=[stop], stream=True
        )
        pieces = [list(job.stream(timeout=60)) for job in jobs]
        stopped_pieces = list(stopped.stream(timeout=60))
        results = [job.result(timeout=10) for job in jobs]
        stopped_result = stopped.result(timeout=10)
    for got, result in zip(pieces, results, strict=True):
        assert "".join(got) == result["text"]
    cut = expected.index(stop)
    assert stopped_result["text"] == expected[:cut]
    assert stopped_result["finish_reason"] == "stop"
    assert "".join(stopped_pieces) == expected[:cut]  # no part of the stop string got out
    tail = entries(redis_url, jobs[0].id)[-1]
    assert tail.event is StreamEvent.end and tail.tokens == results[0]["tokens"]


def test_sequence_stream_in_asyncio_matches_the_result(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    start_worker(redis_url, sequence_repository)

    async def read() -> tuple[list[str], JobStatus, str]:
        async with AsyncClient(redis_url) as client:
            job = await client.sequence(
                "async ", model=MODEL, max_tokens=40000, temperature=0, stream=True
            )
            stream = job.stream(timeout=60)
            pieces = [await anext(stream)]
            status = await job.status()  # read as it was made: no result yet
            pieces += [piece async for piece in stream]
            return pieces, status, (await job.result(timeout=10))["text"]

    pieces, status, text = asyncio.run(read())
    assert status is JobStatus.queued
    assert "".join(pieces) == text and len(text) == 40000


def test_sequence_cancel_stops_it_mid_sequence(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    start_worker(redis_url, sequence_repository)
    with Client(redis_url) as client:
        job = client.sequence("while ", model=MODEL, max_tokens=60000, temperature=0, stream=True)
        stream = job.stream(timeout=60)
        read = next(stream)
        assert job.cancel()
        with pytest.raises(JobCancelled):
            for piece in stream:
                read += piece
        with pytest.raises(JobCancelled):
            job.result(timeout=10)
        last = entries(redis_url, job.id)[-1]
        assert last.event is StreamEvent.error and last.error == "JobCancelled"
        assert len(read) < 60000  # it stopped, long before its end
        # The worker goes on serving.
        assert client.sequence("ok", model=MODEL, max_tokens=3).result(timeout=30)["tokens"]


def test_sequence_invalid_prompts_fail_typed_and_the_worker_serves_on(
    redis_url: str, tmp_path: Path, start_worker
) -> None:
    publish_sequence_model(tmp_path, max_length=16)
    publish_sequence_model(tmp_path, name="tiny-rnn-long")
    start_worker(redis_url, tmp_path, AIMASS_MAX_RESULT_BYTES="2000")
    with Client(redis_url) as client:
        unknown = client.sequence("caf\u00e9 \u2603", model=MODEL, max_tokens=3)
        empty = client.sequence("", model=MODEL, max_tokens=3)
        long = client.sequence("x" * 16, model=MODEL, max_tokens=3)
        capped = client.sequence("abc", model=MODEL, max_tokens=100, temperature=0)
        with pytest.raises(InvalidInput, match="no token for"):
            unknown.result(timeout=30)
        with pytest.raises(InvalidInput, match="start token"):
            empty.result(timeout=30)
        with pytest.raises(InvalidInput, match="at most 16 tokens"):
            long.result(timeout=30)
        result = capped.result(timeout=30)
        big = client.sequence("abc", model="tiny-rnn-long", max_tokens=5000, temperature=0)
        with pytest.raises(PayloadTooLarge, match="AIMASS_MAX_RESULT_BYTES"):
            big.result(timeout=30)
    assert result["tokens"] <= 13 and result["prompt_tokens"] == 3  # max_length, prompt included
    assert all(character in VOCABULARY for character in result["text"])


def test_sequence_sigkill_mid_sequence_is_answered_once_and_the_stream_says_restart(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    # Longer than the job's run, else Redis hands it out again while it decodes.
    fast_restore = {"AIMASS_VISIBILITY_TIMEOUT_S": "5"}
    first = start_worker(redis_url, sequence_repository, **fast_restore)
    with Client(redis_url) as client:
        # A seed whose text runs the whole 20000 tokens with this model.
        job = client.sequence(
            "for ", model=MODEL, max_tokens=20000, temperature=0.4, seed=1, stream=True
        )
        stream = job.stream(timeout=120)
        before = next(stream) + next(stream)
        first.kill()  # SIGKILL, mid-sequence
        start_worker(redis_url, sequence_repository, **fast_restore)
        restarts: list[StreamRestarted] = []
        text = ""
        while True:
            try:
                for piece in stream:
                    text += piece
                break
            except StreamRestarted as restart:
                restarts.append(restart)
                text = ""
        result = job.result(timeout=60)
    assert [r.run for r in restarts] == [2]
    assert text == result["text"]
    assert result["text"].startswith(before)  # the same seed: the same text again
    assert result["tokens"] == 20000
    events = [e.event for e in entries(redis_url, job.id)]
    assert events.count(StreamEvent.restart) == 1 and events.count(StreamEvent.end) == 1
    assert redis.Redis.from_url(redis_url).hlen("unacked") == 0


def test_sequence_generate_command_streams_the_text(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    start_worker(redis_url, sequence_repository)
    command = [
        *aimass_command(),
        "generate",
        "--model",
        MODEL,
        "--prompt",
        "def ",
        "--stream",
        "--max-tokens",
        "50",
        "--temperature",
        "0",
    ]
    done = subprocess.run(
        command, env=child_env(redis_url), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == reference_greedy("def ", 50) + "\n"


def test_sequence_steps_padded_to_buckets_write_the_same_text(
    redis_url: str, sequence_repository: Path, start_worker
) -> None:
    """Buckets as on a GPU (one session per number of sequences, each step padded up to
    one): the same texts as exact sizes."""
    padding = start_worker(
        redis_url, sequence_repository, AIMASS_BATCH_BUCKETS="on", AIMASS_MAX_SEQUENCES="8"
    )
    jobs = [
        Submission.sequence(f"{i}: ", model=MODEL, max_tokens=30 + 7 * i, seed=i) for i in range(12)
    ]
    with Client(redis_url) as client:
        padded = client.wait(client.submit_many(jobs), timeout=60)
    assert {r["timing"]["bucket"] for r in padded} <= {1, 2, 4, 8}
    assert max(r["timing"]["bucket"] for r in padded) > 1
    assert [r["seed"] for r in padded] == list(range(12))
    # The same jobs again (new ids), on a worker of exact sizes, give the same texts.
    padding.stop()
    start_worker(redis_url, sequence_repository, AIMASS_BATCH_BUCKETS="off")
    with Client(redis_url) as client:
        again = [
            client.sequence(j.kwargs["prompt"], model=MODEL, **_options(j.kwargs)).result(60)
            for j in jobs
        ]
    assert [r["text"] for r in again] == [r["text"] for r in padded]


def _options(kwargs: dict[str, object]) -> dict[str, object]:
    return {key: kwargs[key] for key in ("max_tokens", "seed", "temperature")}
