"""Reading results (aimass.producer.results): a job's status, typed errors, decoded
images."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from aimass.producer.results import JobStatus, decode_result, status_of
from aimass.protocol.errors import InvalidInput, JobExpired, ModelError
from aimass.protocol.records import ResultRecord
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.unit


def stored(document: dict) -> ResultRecord:
    """A result record as a reader decodes it from Redis."""
    record = ResultRecord.decode(json.dumps(document), "j")
    assert record is not None
    return record


@pytest.mark.parametrize(
    ("meta", "submitted", "status"),
    [
        (None, False, JobStatus.unknown),
        (None, True, JobStatus.queued),
        ({"status": "PENDING"}, True, JobStatus.queued),
        ({"status": "STARTED"}, True, JobStatus.started),
        ({"status": "SUCCESS"}, False, JobStatus.succeeded),
        ({"status": "FAILURE"}, True, JobStatus.failed),
        ({"status": "REVOKED"}, True, JobStatus.expired),
    ],
)
def test_status_from_the_stored_and_the_submission_record(
    meta: dict | None, submitted: bool, status: JobStatus
) -> None:
    assert status_of(stored(meta) if meta else None, submitted) is status


def test_failed_and_expired_results_raise_their_typed_errors() -> None:
    failed = {
        "status": "FAILURE",
        "result": {
            "exc_type": "InvalidInput",
            "exc_message": ["image is 3x3"],
            "exc_module": "aimass.producer.errors",
        },
    }
    with pytest.raises(InvalidInput, match="image is 3x3"):
        decode_result("j", stored(failed))
    foreign = {
        "status": "FAILURE",
        "result": {"exc_type": "KeyError", "exc_message": ["'x'"], "exc_module": "builtins"},
    }
    with pytest.raises(ModelError, match="KeyError: 'x'"):
        decode_result("j", stored(foreign))
    revoked = {
        "status": "REVOKED",
        "result": {
            "exc_type": "TaskRevokedError",
            "exc_message": ["expired"],
            "exc_module": "celery.exceptions",
        },
    }
    with pytest.raises(JobExpired, match="not started before its deadline"):
        decode_result("j", stored(revoked))


def test_generated_images_decode_to_pil_or_numpy() -> None:
    buffer = io.BytesIO()
    Image.fromarray(row_image(2)).save(buffer, format="PNG")
    tensor = np.arange(4, dtype=np.float32).reshape(2, 2)
    meta = {
        "status": "SUCCESS",
        "result": {
            "images": [
                base64.b64encode(buffer.getvalue()).decode(),
                {
                    "dtype": "float32",
                    "shape": [2, 2],
                    "data": base64.b64encode(tensor.tobytes()).decode(),
                },
            ]
        },
    }
    png, array = decode_result("j", stored(meta))["images"]
    assert isinstance(png, Image.Image) and png.size == (8, 8)
    np.testing.assert_array_equal(array, tensor)
    assert isinstance(decode_result("j", stored(meta), decode=False)["images"][0], str)
