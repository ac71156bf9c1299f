"""The tensor codec and an infer job's checks against the manifest: pure, no server."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from aimass.protocol.contract import InferJob, parse_job
from aimass.protocol.errors import InvalidJob, PayloadTooLarge
from aimass.protocol.manifest import Manifest, ModelKind, TensorSpec
from aimass.protocol.tensors import (
    array_from_data,
    array_from_document,
    encode_tensors,
    tensor_document,
)
from aimass.worker.batcher import BatchOutput
from aimass.worker.infer import TensorModel
from aimass.worker.kinds import Limits
from aimass.worker.runs import run_by_shape

pytestmark = pytest.mark.unit

LIMITS = Limits(max_payload_bytes=1 << 20, max_image_pixels=1 << 20)


@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "float64", "int8", "int32", "int64", "uint8", "bool"]
)
def test_every_datatype_round_trips_as_bytes_and_as_a_list(dtype: str) -> None:
    array = np.arange(6).reshape(2, 3) % 2 if dtype == "bool" else np.arange(6).reshape(2, 3)
    array = array.astype(dtype)
    for binary in (True, False):
        document = tensor_document("t", array, binary)
        back = array_from_document(document)
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


def test_nested_and_flat_lists_give_the_same_array() -> None:
    flat = array_from_data("t", "INT32", [2, 2], [1, 2, 3, 4], 1 << 10)
    nested = array_from_data("t", "INT32", [2, 2], [[1, 2], [3, 4]], 1 << 10)
    np.testing.assert_array_equal(flat, nested)


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "says"),
    [
        ("INT8", [1], [300], "values 300..300 do not fit INT8 (-128..127)"),
        ("BOOL", [2], [1, 0], "BOOL data must be true/false; got integer values"),
        ("FP32", [2, 2], [[1, 2], [3]], "ragged"),
        ("FP32", [2, 2], [[1, 2, 3, 4]], "nested as [1, 4], but its shape says [2, 2]"),
        ("FP32", [2], b"\0" * 4, "data has 4 bytes, but shape [2] of FP32 needs 8"),
        ("FP32", [1], {"a": 1}, "must be a list of numbers or raw bytes"),
    ],
)
def test_data_that_does_not_fit_is_refused_naming_the_tensor(
    datatype: str, shape: list[int], data: object, says: str
) -> None:
    with pytest.raises(InvalidJob, match="tensor 'x'") as caught:
        array_from_data("x", datatype, shape, data, 1 << 10)
    assert says in caught.value.message


def test_a_tensor_past_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(PayloadTooLarge, match="needs 4000000 bytes; the limit is 1024"):
        array_from_data("x", "FP32", [1000, 1000], [0], 1024)


def test_the_client_sends_arrays_raw_and_lists_with_tensorflows_dtypes() -> None:
    (floats, ints) = encode_tensors({"a": [[0.5, 1.0]], "b": [1, 2]}, raw=True)
    assert (floats["datatype"], floats["shape"]) == ("FP32", [1, 2])
    assert (ints["datatype"], ints["shape"]) == ("INT64", [2])
    assert floats["data"] == np.array([0.5, 1.0], "<f4").tobytes()
    (as_json,) = encode_tensors({"a": np.ones(2, np.float16)}, raw=False)
    assert base64.b64decode(as_json["data"]) == np.ones(2, "<f2").tobytes()


def manifest(batched: bool = True) -> Manifest:
    batch = [-1] if batched else []
    return Manifest(
        name="m",
        version=3,
        kind=ModelKind.tensor,
        inputs=[
            TensorSpec(name="x", dtype="float32", shape=[*batch, 2]),
            TensorSpec(name="ids", dtype="int64", shape=[*batch, -1]),
        ],
        outputs=[
            TensorSpec(name="y", dtype="float32", shape=[*batch, 1]),
            TensorSpec(name="z", dtype="float32", shape=[*batch, 2]),
        ],
        batched=batched,
        sha256="0",
    )


def job(**fields: object) -> InferJob:
    inputs = [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "ids", "shape": [2, 5], "datatype": "INT64", "data": list(range(10))},
    ]
    parsed = parse_job(ModelKind.tensor, {"model": "m", "inputs": inputs, **fields})
    assert isinstance(parsed, InferJob)
    return parsed


def test_a_job_becomes_feeds_of_its_batch_size_and_outputs_as_asked() -> None:
    model = TensorModel(manifest())
    feeds, size, wanted = model.prepare(
        job(outputs=[{"name": "z", "parameters": {"binary_data": True}}], id="q"), LIMITS
    )
    assert size == 2 and feeds["ids"].shape == (2, 5) and feeds["x"].dtype == np.float32
    output = BatchOutput([np.zeros((2, 1), np.float32), np.ones((2, 2), np.float32)], 0, 0, 2, 2)
    result = model.finish(job(id="q"), wanted, output)
    assert result["model_name"] == "m" and result["model_version"] == "3" and result["id"] == "q"
    (z,) = result["outputs"]
    assert z["name"] == "z" and isinstance(z["data"], str)
    np.testing.assert_array_equal(array_from_document(z), np.ones((2, 2)))


def test_a_model_without_a_batch_dimension_takes_a_job_as_one_row() -> None:
    model = TensorModel(manifest(batched=False))
    inputs = [
        {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]},
        {"name": "ids", "shape": [4], "datatype": "INT64", "data": [1, 2, 3, 4]},
    ]
    parsed = parse_job(ModelKind.tensor, {"model": "m", "inputs": inputs})
    feeds, size, _ = model.prepare(parsed, LIMITS)  # type: ignore[arg-type]
    assert size == 1 and feeds["x"].shape == (1, 2) and feeds["ids"].shape == (1, 4)
    assert model.warmup_feeds(1)["ids"].shape == (1, 1)


def test_jobs_of_different_shapes_run_apart_and_get_their_own_rows() -> None:
    runs: list[tuple[int, ...]] = []

    def runner(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        runs.append(feeds["ids"].shape)
        return [feeds["ids"].sum(axis=1)]

    jobs = [{"ids": np.full((n, length), n, np.int64)} for n, length in ((1, 3), (2, 5), (3, 3))]
    parts, _ = run_by_shape(runner, jobs, 16)  # type: ignore[arg-type]
    assert sorted(runs) == [(2, 5), (4, 3)]
    assert [part[0].tolist() for part in parts] == [[3], [10, 10], [9, 9, 9]]
