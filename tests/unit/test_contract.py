from __future__ import annotations

import base64
import json
import re

import msgpack
import numpy as np
import pytest

from aimass.protocol.codecs import tensor_payload
from aimass.protocol.contract import ClassifyJob, parse_job, task_name
from aimass.protocol.errors import InvalidJob, error_from_result
from aimass.protocol.keys import (
    CELERY_QUEUE,
    DEFAULT_QUEUE,
    priority_queue_name,
    priority_queue_names,
    queue_name,
)
from aimass.protocol.manifest import ModelKind
from aimass.protocol.schema import schema_documents

pytestmark = pytest.mark.unit

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()


def test_queue_names_are_the_wire_names() -> None:
    assert queue_name("digits") == "aimass.digits"
    assert priority_queue_name("digits", 0) == "aimass.digits"
    assert priority_queue_name("digits", 6) == "aimass.digits\x06\x166"
    assert priority_queue_names("digits") == [
        "aimass.digits",
        "aimass.digits\x06\x163",
        "aimass.digits\x06\x166",
        "aimass.digits\x06\x169",
    ]
    assert (CELERY_QUEUE, DEFAULT_QUEUE) == ("aimass.celery", "aimass.default")


def test_each_model_kind_has_its_task() -> None:
    assert [task_name(kind) for kind in ModelKind] == [
        "aimass.classify",
        "aimass.generate",
        "aimass.infer",
        "aimass.sequence",
    ]


def test_json_job_decodes_base64_bytes() -> None:
    job = parse_job(ModelKind.classify, {"model": "digits", "inputs": [{"image": PNG}]})
    assert isinstance(job, ClassifyJob)
    assert job.inputs[0].image is not None and job.inputs[0].image.startswith(b"\x89PNG")
    assert job.top_k == 5 and job.version is None


def test_msgpack_job_carries_raw_bytes() -> None:
    kwargs = msgpack.unpackb(
        msgpack.packb(
            {
                "model": "digits",
                "inputs": [{"tensor": {"dtype": "float32", "shape": [2], "data": b"\0" * 8}}],
            }
        )
    )
    job = parse_job(ModelKind.classify, kwargs)
    assert isinstance(job, ClassifyJob)
    assert job.inputs[0].tensor is not None and job.inputs[0].tensor.data == b"\0" * 8


def test_tensor_payload_round_trip_in_json() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    wire = json.loads(json.dumps({"model": "m", "inputs": [{"tensor": tensor_payload(array)}]}))
    job = parse_job(ModelKind.classify, wire)
    assert isinstance(job, ClassifyJob)
    tensor = job.inputs[0].tensor
    assert tensor is not None and tensor.shape == [2, 3]
    assert np.frombuffer(tensor.data, np.float32).tolist() == array.ravel().tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": [{"image": PNG}]}, "model: Field required"),
        ({"model": "m", "inputs": []}, "inputs: List should have at least 1 item"),
        ({"model": "m", "inputs": [{}]}, "exactly one of 'image' or 'tensor'"),
        ({"model": "m", "inputs": [{"image": "not base64!"}]}, "invalid base64"),
        ({"model": "m", "inputs": [{"image": PNG}], "top_k": 0}, "top_k"),
        ({"model": "m", "inputs": [{"image": PNG}], "topk": 3}, "topk: Extra inputs"),
        (
            {
                "model": "m",
                "inputs": [{"tensor": {"dtype": "complex64", "shape": [1], "data": ""}}],
            },
            "dtype",
        ),
        (
            {"model": "m", "inputs": [{"tensor": {"dtype": "float32", "shape": [-1], "data": ""}}]},
            "greater than or equal to 0",
        ),
        ({"model": "m"}, "exactly one of 'inputs' (a list of images) or 'batch'"),
        (
            {
                "model": "m",
                "inputs": [{"image": PNG}],
                "batch": {"dtype": "uint8", "shape": [1, 1], "data": "AA=="},
            },
            "exactly one of",
        ),
        (
            {"model": "m", "batch": {"dtype": "uint8", "shape": [], "data": "AA=="}},
            "'batch' must stack 1 to 1024 images along its first dimension; its shape is []",
        ),
        (
            {"model": "m", "batch": {"dtype": "uint8", "shape": [0, 8, 8], "data": ""}},
            "its shape is [0, 8, 8]",
        ),
        (
            {"model": "m", "batch": {"dtype": "uint8", "shape": [1025, 1], "data": ""}},
            "must stack 1 to 1024 images",
        ),
    ],
)
def test_invalid_classify_jobs_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidJob, match=re.escape(message)):
        parse_job(ModelKind.classify, kwargs)


def test_generate_labels_must_match_count() -> None:
    with pytest.raises(InvalidJob, match="'labels' has 2 entries but 'count' is 3"):
        parse_job(ModelKind.generate, {"model": "g", "count": 3, "labels": [1, 2]})


def test_positional_or_non_dict_kwargs_are_refused() -> None:
    with pytest.raises(InvalidJob, match="takes keyword arguments"):
        parse_job(ModelKind.generate, ["g", 3])


def test_error_names_round_trip() -> None:
    error = error_from_result("InvalidInput", "bad")
    assert type(error).__name__ == "InvalidInput" and str(error) == "bad"
    unknown = error_from_result("ZeroDivisionError", "x")
    assert type(unknown).__name__ == "ModelError" and "ZeroDivisionError" in str(unknown)


def test_the_error_schema_names_every_typed_error_a_worker_stores() -> None:
    from typing import get_args

    from aimass.protocol.contract import ErrorResult
    from aimass.protocol.errors import JOB_ERRORS

    assert set(get_args(ErrorResult.model_fields["exc_type"].annotation)) == set(JOB_ERRORS)


def test_committed_json_schemas_are_current() -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    for name, text in schema_documents().items():
        path = folder / name
        assert path.exists(), f"{path} missing: run python -m aimass.protocol.schema docs/schemas"
        assert path.read_text() == text, (
            f"{path} is stale: run python -m aimass.protocol.schema docs/schemas"
        )


def test_workers_take_each_field_only_in_its_own_type() -> None:
    wire = {"model": "m", "inputs": [{"image": PNG}]}
    for bad in ("3", True, 3.0):
        with pytest.raises(InvalidJob, match="top_k: Input should be a valid integer"):
            parse_job(ModelKind.classify, {**wire, "top_k": bad}, strict=True)
    assert parse_job(ModelKind.classify, {**wire, "top_k": 3}, strict=True).top_k == 3
    # The client is lenient with Python values (NumPy integers) and sends plain ones.
    job = parse_job(ModelKind.generate, {"model": "g", "count": 2, "labels": list(np.arange(2))})
    assert job.model_dump()["labels"] == [0, 1]
