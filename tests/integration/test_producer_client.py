"""The client against a real Redis and a real worker: statuses, re-attaching, typed
errors, waiting for many, and the asyncio flavour."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimass.producer.aio import AsyncClient
from aimass.producer.client import Client, JobStatus
from aimass.producer.submission import Submission
from aimass.protocol.codecs import encode_image, tensor_payload
from aimass.protocol.errors import InvalidInput, InvalidJob, JobTimeout, ModelError, UnknownModel
from aimass.protocol.manifest import ModelKind
from tests.support.processes import child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


def run_python(code: str, redis_url: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(redis_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_unknown_queued_and_forgotten(redis_url: str) -> None:
    with Client(redis_url) as client:  # no worker on this database: jobs stay queued
        assert client.job("never-submitted").status() is JobStatus.unknown
        job = client.classify(row_image(1), model="tiny")
        assert job.status() is JobStatus.queued
        assert client.job(job.id).status() == "queued"
        with pytest.raises(JobTimeout, match=r"did not finish within 0.2 s \(status: queued\)"):
            job.result(timeout=0.2)
        job.forget()
        assert job.status() is JobStatus.unknown


@pytest.mark.parametrize(
    ("stored", "why"),
    [(b"\xff not json", "is not JSON"), (b"[1, 2]", "is JSON but not an object (a list)")],
)
def test_a_stored_result_that_is_not_a_result_document_is_a_typed_error(
    redis_url: str, stored: bytes, why: str
) -> None:
    with Client(redis_url) as client:  # no worker here: only the stored value answers
        job = client.classify(row_image(1), model="tiny")
        client.redis.set(f"celery-task-meta-{job.id}", stored)
        assert job.status() is JobStatus.failed
        with pytest.raises(ModelError, match=f"the job's stored result {re.escape(why)}"):
            job.result(timeout=5)
        other = client.classify(row_image(2), model="tiny")
        client.redis.set(f"celery-task-meta-{other.id}", stored)  # read by the watcher
        (done,) = client.wait([other], timeout=5, return_exceptions=True)
        assert isinstance(done, ModelError)


def test_every_input_kind_classifies(shared_url: str, tmp_path: Path) -> None:
    path = tmp_path / "row2.png"
    path.write_bytes(encode_image(row_image(2)))
    inputs = [
        str(path),
        path,
        encode_image(row_image(3)),
        Image.fromarray(row_image(4)),
        row_image(5),
        (row_image(6) / 255.0).astype(np.float32)[:, :, None],
    ]
    with Client(shared_url) as client:
        result = client.classify(inputs, model="tiny", top_k=2).result(timeout=30)
        single = client.classify(row_image(7), model="tiny").result(timeout=30)
    assert [p[0]["label"] for p in result["predictions"]] == ["2", "2", "3", "4", "5", "6"]
    assert all(len(p) == 2 for p in result["predictions"])
    assert single["predictions"][0][0]["label"] == "7" and len(single["predictions"][0]) == 5


def test_a_batch_of_pixel_arrays_travels_as_one_tensor_and_answers_per_image(
    shared_url: str,
) -> None:
    rows = [row_image(i % 8) for i in range(12)]
    with Client(shared_url) as client:
        stacked = client.classify(rows, model="tiny", top_k=3).result(timeout=30)
        apart = [client.classify(row, model="tiny", top_k=3) for row in rows]
        one_by_one = [job.result(timeout=30)["predictions"][0] for job in apart]
        floats = tensor_payload(np.zeros((2, 9, 8), np.float32))  # not pixels: checked
        bad = client.submit(
            Submission.from_kwargs(ModelKind.classify, {"model": "tiny", "batch": floats})
        )
        with pytest.raises(
            InvalidInput,
            match=r"batch: unexpected batch .* got shape "
            r"\[2, 9, 8\] dtype float32",
        ):
            bad.result(timeout=30)
    assert [p[0]["label"] for p in stacked["predictions"]] == [str(i % 8) for i in range(12)]
    assert stacked["predictions"] == one_by_one
    assert stacked["timing"]["batch_size"] >= 12


def test_reattach_from_other_processes_both_ways(shared_url: str) -> None:
    with Client(shared_url) as client:
        mine = client.classify(row_image(3), model="tiny")
        seen = run_python(
            f"""
            from aimass.producer.client import Client
            client = Client.from_env()
            result = client.job({mine.id!r}).result(timeout=30)
            print(result["predictions"][0][0]["label"])
            print(client.generate(model="tiny-gan", count=2, labels=[6, 1], seed=3).id)
        """,
            shared_url,
        ).splitlines()
        assert seen[0] == "3"
        theirs = client.job(seen[1])
        images = theirs.result(timeout=30)["images"]
        assert theirs.status() is JobStatus.succeeded
    assert [img.size for img in images] == [(8, 8), (8, 8)]
    rows = [int(np.asarray(img).mean(axis=1).argmax()) for img in images]
    assert rows == [6, 1]


def test_typed_errors_of_the_worker_and_of_the_producer(shared_url: str) -> None:
    with Client(shared_url) as client:
        bad_image = client.classify(b"not an image", model="tiny")
        wrong_model = client.generate(model="tiny", count=1)  # a classifier
        with pytest.raises(InvalidInput, match="not PNG, JPEG or NPY"):
            bad_image.result(timeout=30)
        with pytest.raises(InvalidJob, match="classify model"):
            wrong_model.result(timeout=30)
        assert bad_image.status() is JobStatus.failed
        with pytest.raises(InvalidJob, match="count: Input should be greater than or equal"):
            client.generate(model="tiny-gan", count=0)  # refused before it is sent
        missing = client.classify(row_image(1), model="tiny", version=7)
        with pytest.raises(UnknownModel, match="no version 7"):
            missing.result(timeout=30)


def test_wait_and_as_completed_many(shared_url: str) -> None:
    with Client(shared_url) as client:
        jobs = [client.classify(row_image(i % 8), model="tiny", top_k=1) for i in range(20)]
        bad = client.classify(b"junk", model="tiny")
        finished = list(client.as_completed([*jobs, bad], timeout=30))
        assert sorted(job.id for job in finished) == sorted(job.id for job in [*jobs, bad])
        results = client.wait(jobs, timeout=30)
        assert [r["predictions"][0][0]["label"] for r in results] == [str(i % 8) for i in range(20)]
        with pytest.raises(InvalidInput):
            client.wait([jobs[0], bad], timeout=30)
        mixed = client.wait([bad, jobs[1]], timeout=30, return_exceptions=True)
        assert isinstance(mixed[0], InvalidInput) and mixed[1]["predictions"][0][0]["label"] == "1"


def test_generate_as_png_images_or_tensors(shared_url: str) -> None:
    with Client(shared_url) as client:
        pngs = client.generate(model="tiny-gan", count=2, labels=[2, 5], seed=4)
        tensors = client.generate(model="tiny-gan", count=2, labels=[2, 5], seed=4, format="tensor")
        as_png, as_tensor = pngs.result(timeout=30), tensors.result(timeout=30)
    assert all(isinstance(image, Image.Image) for image in as_png["images"])
    arrays = as_tensor["images"]
    assert all(isinstance(a, np.ndarray) and a.shape[:2] == (8, 8) for a in arrays)
    assert [int(a.reshape(8, 8).mean(axis=1).argmax()) for a in arrays] == [2, 5]
    assert as_tensor["seed"] == as_png["seed"] == 4


def test_async_client_submits_waits_and_reads_typed_errors(shared_url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(shared_url) as client:
            assert await client.job("nobody-sent-this").status() is JobStatus.unknown
            job = await client.classify(row_image(6), model="tiny", top_k=1)
            assert await job.status() in (JobStatus.queued, JobStatus.started, JobStatus.succeeded)
            result = await job.result(timeout=30)
            assert result["predictions"][0][0]["label"] == "6"
            assert await client.job(job.id).status() is JobStatus.succeeded
            many = [await client.classify(row_image(i), model="tiny") for i in range(8)]
            generated = await client.generate(model="tiny-gan", count=1, labels=[3])
            done = [j.id async for j in client.as_completed([*many, generated], timeout=30)]
            assert sorted(done) == sorted(j.id for j in [*many, generated])
            labels = [r["predictions"][0][0]["label"] for r in await client.wait(many)]
            assert labels == [str(i) for i in range(8)]
            image = (await generated.result())["images"][0]
            assert isinstance(image, Image.Image)
            bad = await client.classify(b"junk", model="tiny")
            with pytest.raises(InvalidInput):
                await bad.result(timeout=30)
            assert await bad.status() is JobStatus.failed
            await bad.forget()
            assert await bad.status() is JobStatus.unknown

    asyncio.run(scenario())
    with Client(shared_url) as sync_client:  # the two flavours share jobs

        async def submit() -> str:
            async with AsyncClient(shared_url) as client:
                return (await client.classify(row_image(2), model="tiny")).id

        job_id = asyncio.run(submit())
        assert sync_client.job(job_id).result(timeout=30)["predictions"][0][0]["label"] == "2"


def test_async_waits_do_not_block_the_event_loop(redis_url: str) -> None:
    async def scenario() -> int:
        async with AsyncClient(redis_url) as client:  # no worker: the job never finishes
            job = await client.classify(row_image(1), model="tiny")
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            with pytest.raises(JobTimeout):
                await job.result(timeout=0.5)
            ticker.cancel()
            return ticks

    assert asyncio.run(scenario()) >= 10
