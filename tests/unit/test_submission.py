"""Submissions (aimass.producer.submission): inputs encoded and checked against the
contract before anything is sent."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from aimass.producer.submission import Submission, expires_at
from aimass.protocol.codecs import encode_image
from aimass.protocol.contract import Priority
from aimass.protocol.errors import InvalidJob
from aimass.protocol.manifest import ModelKind
from aimass.protocol.messages import (
    TaskMessage,
)
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.unit


def test_classify_submission_encodes_images_and_checks_the_contract() -> None:
    submission = Submission.classify(
        [row_image(3), row_image(4)], model="tiny", top_k=2, priority=Priority.low
    )
    assert submission.kind is ModelKind.classify
    assert submission.list_name == "aimass.tiny\x06\x166"
    # uint8 pixel arrays of one shape go stacked as one raw uint8 batch tensor...
    batch = submission.kwargs["batch"]
    assert batch["dtype"] == "uint8" and batch["shape"] == [2, 8, 8]
    assert base64.b64decode(batch["data"]) == row_image(3).tobytes() + row_image(4).tobytes()
    assert "inputs" not in submission.kwargs
    # ... one alone, or of different shapes, as raw tensors; encoded images as they are.
    one = Submission.classify(row_image(3), model="tiny")
    tensor = one.kwargs["inputs"][0]["tensor"]
    assert tensor["dtype"] == "uint8" and tensor["shape"] == [8, 8]
    assert base64.b64decode(tensor["data"]) == row_image(3).tobytes()
    mixed = Submission.classify([row_image(3), row_image(3)[:4]], model="tiny")
    assert [item["tensor"]["shape"] for item in mixed.kwargs["inputs"]] == [[8, 8], [4, 8]]
    png = Submission.classify(encode_image(row_image(3)), model="tiny")
    assert base64.b64decode(png.kwargs["inputs"][0]["image"]).startswith(b"\x89PNG")
    # The body is msgpack, bytes raw, unless JSON is asked for (bytes as base64 text).
    message = json.loads(submission.message())
    assert message["content-type"] == "application/x-msgpack"
    _, kwargs, _ = TaskMessage.from_envelope(message).payload()
    assert kwargs == submission.raw_kwargs and kwargs["batch"]["data"] == (
        row_image(3).tobytes() + row_image(4).tobytes()
    )
    as_json = Submission.classify(
        [row_image(3), row_image(4)], model="tiny", top_k=2, serializer="json"
    )
    _, kwargs, _ = TaskMessage.decode(as_json.message()).payload()
    assert kwargs == submission.kwargs == as_json.kwargs
    with pytest.raises(ValueError, match="serializer must be 'msgpack' or 'json'"):
        Submission(ModelKind.classify, submission.kwargs, serializer="pickle")  # type: ignore[arg-type]
    with pytest.raises(InvalidJob, match="top_k"):
        Submission.classify(row_image(1), model="tiny", top_k=0)
    # (A bare number is a feature vector of one; a set is nothing a job can carry.)
    with pytest.raises(TypeError, match="expected a file path, bytes, a PIL image"):
        Submission.classify({4, 2}, model="tiny")  # type: ignore[arg-type]


def test_generate_submission_refuses_labels_that_do_not_match_count() -> None:
    with pytest.raises(InvalidJob, match="'labels' has 2 entries but 'count' is 3"):
        Submission.generate(model="tiny-gan", count=3, labels=[1, 2])
    ok = Submission.generate(model="tiny-gan", count=2, labels=[1, 2], seed=5)
    assert ok.kwargs == {
        "model": "tiny-gan",
        "count": 2,
        "labels": [1, 2],
        "seed": 5,
        "format": "png",
    }
    pinned = Submission.classify(b"\x89PNG", model="tiny", version=2)
    assert pinned.kwargs == {
        "model": "tiny",
        "version": 2,
        "top_k": 5,
        "inputs": [{"image": "iVBORw=="}],
    }


def test_job_ids_must_be_usable() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Submission.generate(model="m", job_id="")
    assert Submission.generate(model="m", job_id="order-7").job_id == "order-7"


def test_deadlines_become_aware_utc_times() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert expires_at(None, now) is None
    assert expires_at(2.5, now) == now + timedelta(seconds=2.5)
    assert expires_at(timedelta(minutes=1), now) == now + timedelta(minutes=1)
    plus_two = datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert expires_at(plus_two, now) == now
    assert expires_at(datetime(2030, 1, 1), now).tzinfo is UTC  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="seconds from now, a timedelta or a datetime"):
        expires_at("soon", now)  # type: ignore[arg-type]


def test_a_model_name_no_worker_could_serve_is_refused_before_sending() -> None:
    with pytest.raises(InvalidJob, match="not a valid model name"):
        Submission.classify(row_image(1), model="../tiny")
