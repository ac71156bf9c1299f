"""Infer jobs (``aimass.infer``) on a real worker: named tensors in the Open Inference
Protocol's form from the client (raw bytes) and from raw LPUSHed messages (JSON lists,
base64), batching by shape, a model without a batch dimension, infer on a classifier,
and the malformed-input table: each bad job a typed error naming its tensor, the worker
alive, and the good jobs sent alongside answered."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from aimass.embedded_redis import RedisServer
from aimass.producer.client import Client
from aimass.protocol.errors import InvalidJob
from tests.support import raw_messages as raw
from tests.support.processes import WorkerProcess, aimass_command, child_env
from tests.support.tensor_models import add_tensor_models, expected_tensor
from tests.support.tiny_models import build_repository, row_image

pytestmark = pytest.mark.integration

DB = 7  # a database of this module's own: its worker serves the tensor models


@pytest.fixture(scope="module")
def infer_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repository = add_tensor_models(build_repository(tmp_path_factory.mktemp("tensor-models")))
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    log = tmp_path_factory.mktemp("logs") / "infer-worker.log"
    worker = WorkerProcess(url, repository, log).start()
    yield url
    assert worker.alive(), worker.log()
    worker.stop()


def infer_message(kwargs: dict[str, Any], model: str, job_id: str | None = None) -> bytes:
    return raw.encode(
        raw.envelope(kwargs, task="aimass.infer", queue=f"aimass.{model}", job_id=job_id)
    )


def test_the_client_sends_raw_bytes_and_gets_arrays(infer_url: str) -> None:
    features = np.array([[1, 2, 3], [0.5, -1, 4]], dtype=np.float32)
    category = np.array([7, 2], dtype=np.int64)
    with Client(infer_url) as client:
        result = client.infer(
            "tiny-tensor", {"features": features, "category": category}, request_id="r-1"
        ).result(timeout=30)
    expected = expected_tensor(features, category)
    assert result["model_name"] == "tiny-tensor" and result["model_version"] == "1"
    assert result["id"] == "r-1"
    assert [out["name"] for out in result["outputs"]] == ["score", "scaled"]
    assert isinstance(result["outputs"][0]["data"], str)  # base64 bytes, as asked
    for name, array in expected.items():
        np.testing.assert_allclose(result["arrays"][name], array, rtol=1e-6)
        assert result["arrays"][name].dtype == np.float32


def test_json_lists_pushed_raw_get_json_lists(infer_url: str) -> None:
    store = redis.Redis.from_url(infer_url)
    job_id = raw.new_id()
    kwargs = {
        "model": "tiny-tensor",
        "inputs": [
            {"name": "category", "shape": [1], "datatype": "INT64", "data": [3]},
            {"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [[1, 1, 1]]},
        ],
        "outputs": [{"name": "score"}],
    }
    raw.push(store, "aimass.tiny-tensor", [infer_message(kwargs, "tiny-tensor", job_id)])
    meta = raw.wait_final(store, [job_id])[job_id]
    assert meta["status"] == "SUCCESS", meta
    (output,) = meta["result"]["outputs"]
    assert output == {"name": "score", "shape": [1, 1], "datatype": "FP32", "data": [9.0]}


def test_jobs_of_several_sequence_lengths_each_get_their_answer(infer_url: str) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 100, (rng.integers(1, 4), length)) for length in (1, 5, 5, 9, 2, 9)]
    with Client(infer_url) as client:
        jobs = [client.infer("tiny-seq", {"tokens": tokens}) for tokens in batches]
        results = client.wait(jobs, timeout=30)
    for tokens, result in zip(batches, results, strict=True):
        np.testing.assert_array_equal(result["arrays"]["total"], tokens.sum(axis=1, keepdims=True))


def test_a_model_without_a_batch_dimension_runs_one_job_a_run(infer_url: str) -> None:
    with Client(infer_url) as client:
        jobs = [client.infer("tiny-unbatched", {"x": [i, 1.0, -2.0]}) for i in range(5)]
        results = client.wait(jobs, timeout=30)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["arrays"]["y"], [2.0 * i, 2.0, -4.0])
        assert result["timing"]["batch_size"] == 1


def test_a_classifier_answers_infer_jobs_with_its_raw_tensors(infer_url: str) -> None:
    image = (row_image(3)[:, :, None] / 255.0).astype(np.float32)[None]
    with Client(infer_url) as client:
        result = client.infer("tiny", {"image": image}, binary=False).result(timeout=30)
    (output,) = result["outputs"]
    assert output["name"] == "probabilities" and isinstance(output["data"], list)
    assert int(np.argmax(result["arrays"]["probabilities"][0])) == 3


def test_the_client_refuses_a_job_the_contract_refuses(infer_url: str) -> None:
    with Client(infer_url) as client, pytest.raises(InvalidJob, match="inputs"):
        client.infer("tiny-tensor", {})


GOOD = {
    "model": "tiny-tensor",
    "inputs": [
        {"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
        {"name": "category", "shape": [1], "datatype": "INT64", "data": [1]},
    ],
}


def with_input(index: int, **changes: Any) -> dict[str, Any]:
    inputs = [dict(item) for item in GOOD["inputs"]]
    inputs[index] = {**inputs[index], **changes}
    return {**GOOD, "inputs": inputs}


# (case, kwargs, exc_type, what its message must say)
MALFORMED: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown name",
        with_input(0, name="feature"),
        "InvalidJob",
        "has no input 'feature'; its inputs are features FP32[?, 3], category INT64[?]",
    ),
    (
        "missing input",
        {**GOOD, "inputs": GOOD["inputs"][:1]},
        "InvalidJob",
        "missing input category INT64[?]",
    ),
    (
        "wrong dtype",
        with_input(1, datatype="INT32"),
        "InvalidJob",
        "input 'category': expected datatype INT64, got INT32",
    ),
    (
        "wrong rank",
        with_input(0, shape=[3], data=[1, 2, 3]),
        "InvalidJob",
        "input 'features': expected shape [?, 3] (rank 2), got [3] (rank 1)",
    ),
    (
        "wrong fixed dimension",
        with_input(0, shape=[1, 4], data=[1, 2, 3, 4]),
        "InvalidJob",
        "(dimension 1 is 4, must be 3)",
    ),
    (
        "too large",
        with_input(0, shape=[100_000_000, 3], data=[1]),
        "PayloadTooLarge",
        "tensor 'features' of shape [100000000, 3] and datatype FP32 needs 1200000000 bytes",
    ),
    (
        "bad base64",
        with_input(0, data="not base64!"),
        "InvalidJob",
        "tensor 'features': data is text but not base64",
    ),
    (
        "bytes not matching the shape",
        with_input(0, data=base64.b64encode(b"\0" * 8).decode()),
        "InvalidJob",
        "tensor 'features': data has 8 bytes, but shape [1, 3] of FP32 needs 12",
    ),
    (
        "list not matching the shape",
        with_input(0, data=[1, 2]),
        "InvalidJob",
        "tensor 'features': data holds 2 values, but shape [1, 3] needs 3",
    ),
    (
        "floats for an integer input",
        with_input(1, data=[1.5]),
        "InvalidJob",
        "tensor 'category': INT64 data must be integers; got floating-point values",
    ),
    (
        "text in the data",
        with_input(0, data=["a", "b", "c"]),
        "InvalidJob",
        "tensor 'features': FP32 data must be numbers",
    ),
    (
        "batch sizes that differ",
        with_input(1, shape=[2], data=[1, 2]),
        "InvalidJob",
        "the inputs' batch sizes (first dimensions) differ: features 1, category 2",
    ),
    (
        "unknown output",
        {**GOOD, "outputs": [{"name": "probabilities"}]},
        "InvalidJob",
        "has no output 'probabilities'; its outputs are score FP32[?, 1], scaled FP32[?, 3]",
    ),
    ("unknown datatype", with_input(0, datatype="FP8"), "InvalidJob", "inputs.0.datatype"),
    ("no inputs", {**GOOD, "inputs": []}, "InvalidJob", "inputs"),
]


def test_malformed_infer_jobs_fail_alone_with_typed_errors(infer_url: str) -> None:
    store = redis.Redis.from_url(infer_url)
    bad_ids = [raw.new_id() for _ in MALFORMED]
    good_ids = [raw.new_id() for _ in range(len(MALFORMED) + 1)]
    messages = [infer_message(GOOD, "tiny-tensor", good_ids[-1])]
    for job_id, good_id, (_, kwargs, _, _) in zip(bad_ids, good_ids, MALFORMED, strict=False):
        messages += [
            infer_message(kwargs, "tiny-tensor", job_id),
            infer_message(GOOD, "tiny-tensor", good_id),
        ]
    raw.push(store, "aimass.tiny-tensor", messages)
    metas = raw.wait_final(store, bad_ids + good_ids)
    for job_id, (case, _, exc_type, says) in zip(bad_ids, MALFORMED, strict=True):
        assert metas[job_id]["status"] == "FAILURE", (case, metas[job_id])
        got_type, message = raw.failure(metas[job_id])
        assert (got_type, case) == (exc_type, case), message
        assert says in message, (case, message)
    for job_id in good_ids:
        assert metas[job_id]["status"] == "SUCCESS", metas[job_id]
        assert metas[job_id]["result"]["outputs"][0]["data"] == [15.0]


def test_the_infer_command_reads_npy_files_and_json_lists(infer_url: str, tmp_path: Path) -> None:
    features = np.array([[1, 0, 2]], dtype=np.float32)
    np.save(tmp_path / "features.npy", features)
    command = [
        *aimass_command(), "infer", "--model", "tiny-tensor",
        "--input", f"features={tmp_path / 'features.npy'}", "--input", "category=[4]",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=child_env(infer_url), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "tiny-tensor v1",
        "score FP32[1, 1]: 11",
        "scaled FP32[1, 3]: 2 0 4",
    ]
    as_json = subprocess.run(
        [*command, "--output", "score", "--json"],
        env=child_env(infer_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["outputs"] == [
        {"name": "score", "shape": [1, 1], "datatype": "FP32", "data": [11.0]}
    ]
    wrong = subprocess.run(
        [*command[:-2], "--input", "category=[1.5]"],
        env=child_env(infer_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 2  # a job the contract refuses: a usage error
    assert "InvalidJob: input 'category': expected datatype INT64, got FP32" in wrong.stderr


# Classify jobs for models whose input is no image: feature vectors and token ids.


def test_the_client_classifies_feature_vectors_as_lists_and_arrays(infer_url: str) -> None:
    with Client(infer_url) as client:
        one = client.classify([0.5, 3, -1.0], model="tiny-features", top_k=2).result(timeout=30)
        several = client.classify(
            [np.array([9.0, 1.0, 2.0]), [0, 0, 7], np.array([1, 5, 2], dtype=np.int32)],
            model="tiny-features",
            top_k=1,
        ).result(timeout=30)
    best, second = one["predictions"][0]
    assert (best["label"], best["index"], second["label"]) == ("mid", 1, "low")
    expected = np.exp([0.5, 3.0, -1.0]) / np.exp([0.5, 3.0, -1.0]).sum()
    assert best["score"] == pytest.approx(expected[1], rel=1e-6)
    # float64 and int32 arrays are converted to the model's float32, as JSON numbers are.
    assert [p[0]["label"] for p in several["predictions"]] == ["low", "high", "mid"]


def test_token_ids_of_several_lengths_are_classified(infer_url: str) -> None:
    with Client(infer_url) as client:
        jobs = [
            client.classify([tokens], model="tiny-tokens", top_k=1)
            for tokens in ([1, 2, 3], [-4, 1], [5] * 6)
        ]
        results = [job.result(timeout=30) for job in jobs]
    assert [r["predictions"][0][0]["label"] for r in results] == [
        "positive",
        "negative",
        "positive",
    ]


def test_features_that_do_not_fit_fail_with_typed_errors(infer_url: str) -> None:
    from aimass.protocol.errors import InvalidInput

    with Client(infer_url) as client:
        with pytest.raises(TypeError, match="as features: expected a non-empty list of numbers"):
            client.classify([["a", "b", "c"]], model="tiny-features")
        with pytest.raises(TypeError, match="ragged"):
            client.classify([[[1, 2], [3]]], model="tiny-tokens")
        cases = [
            ("tiny-features", [1.0, 2.0], "features for input 'features' of model 'tiny-features'"),
            ("tiny-features", [[1.0, 2.0, 3.0]], "data is nested as \\[1, 3\\]"),
            ("tiny-tokens", [1.5, 2.0], "INT64 data must be integers"),
        ]
        for model, values, message in cases:
            with pytest.raises(InvalidInput, match=message):
                client.classify([values], model=model).result(timeout=30)
        # The worker lived through them all.
        ok = client.classify([1.0, 0.0, 0.0], model="tiny-features").result(timeout=30)
    assert ok["predictions"][0][0]["label"] == "low"


def test_the_classify_command_takes_features(infer_url: str) -> None:
    command = [
        *aimass_command(), "classify", "--model", "tiny-features", "--top-k", "2",
        "--features", "0.1,4,2", "--features", "7,1,1",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=child_env(infer_url), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    header, first, second = done.stdout.splitlines()
    assert header.split() == ["features", "label", "score", "next"]
    assert first.split()[:2] == ["0.1,4,2", "mid"] and "high" in first
    assert second.split()[:2] == ["7,1,1", "low"]
    wrong = subprocess.run(
        [*command[:-4], "--features", "1,x,3"],
        env=child_env(infer_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 2 and "'x' in '1,x,3' is not a number" in wrong.stderr
