"""The producer's pure pieces: messages, submissions, result reading, grids, settings."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from aimass.producer.bulk import chunks
from aimass.producer.images import layout_for, tile, upscale_factor
from aimass.producer.progress import Progress
from aimass.producer.results import JobStatus, decode_result, status_of
from aimass.producer.submission import Submission, expires_at
from aimass.protocol.codecs import encode_image
from aimass.protocol.contract import Priority
from aimass.protocol.errors import InvalidInput, InvalidJob, JobExpired, ModelError
from aimass.protocol.manifest import ModelKind
from aimass.protocol.messages import (
    TaskMessage,
    kwargs_repr,
    message_list,
    priority_step,
)
from aimass.protocol.records import ResultRecord
from aimass.protocol.settings import ClientSettings
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("priority", "step", "name"), [
    (Priority.high, 0, "aimass.digits"), (1, 0, "aimass.digits"),
    (Priority.normal, 3, "aimass.digits\x06\x163"), (5, 3, "aimass.digits\x06\x163"),
    (Priority.low, 6, "aimass.digits\x06\x166"), (9, 9, "aimass.digits\x06\x169"),
])
def test_priorities_land_in_the_lists_kombu_reads(priority: int, step: int, name: str) -> None:
    assert priority_step(priority) == step
    assert message_list("digits", priority) == name


def test_a_priority_out_of_range_says_the_range() -> None:
    with pytest.raises(ValueError, match=r"between 0 .* and 9, got 12"):
        priority_step(12)


def test_task_message_is_a_protocol_v2_envelope_with_json_kwargs() -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    built = TaskMessage.build("aimass.generate", "job-1", {"model": "m", "count": 2},
                              queue="aimass.m", priority=6, expires=expires)
    message = json.loads(built.encode())
    assert TaskMessage.decode(built.encode()) == built
    assert built.task_id == "job-1" and built.task == "aimass.generate"
    assert built.expires == expires and built.is_expired(expires)
    assert message["content-type"] == "application/json"
    assert message["headers"]["task"] == "aimass.generate"
    assert message["headers"]["id"] == message["headers"]["root_id"] == "job-1"
    assert message["headers"]["expires"] == "2030-01-02T03:04:05+00:00"
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": "aimass.m"}
    assert message["properties"]["priority"] == 6
    assert message["properties"]["body_encoding"] == "base64"
    args, kwargs, embed = built.payload()
    assert args == [] and kwargs == built.kwargs() == {"model": "m", "count": 2}
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_kwargs_repr_elides_images_and_stays_short() -> None:
    text = kwargs_repr({"model": "digits", "inputs": [{"image": "A" * 5000}] * 3,
                        "note": "x" * 100})
    assert "'inputs': '<3 items>'" in text and "'note': '<100 chars>'" in text
    batch = kwargs_repr({"batch": {"dtype": "uint8", "shape": [16, 8, 8], "data": "A" * 900}})
    assert batch == "{'batch': {'dtype': 'uint8', 'shape': [16, 8, 8], 'data': '<900 chars>'}}"
    assert len(kwargs_repr({f"k{i}": i for i in range(500)})) == 1024


def test_classify_submission_encodes_images_and_checks_the_contract() -> None:
    submission = Submission.classify([row_image(3), row_image(4)], model="tiny", top_k=2,
                                     priority=Priority.low)
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
        row_image(3).tobytes() + row_image(4).tobytes())
    as_json = Submission.classify([row_image(3), row_image(4)], model="tiny", top_k=2,
                                  serializer="json")
    _, kwargs, _ = TaskMessage.decode(as_json.message()).payload()
    assert kwargs == submission.kwargs == as_json.kwargs
    with pytest.raises(ValueError, match="serializer must be 'msgpack' or 'json'"):
        Submission(ModelKind.classify, submission.kwargs, serializer="pickle")  # type: ignore[arg-type]
    with pytest.raises(InvalidJob, match="top_k"):
        Submission.classify(row_image(1), model="tiny", top_k=0)
    with pytest.raises(TypeError, match="expected a file path, bytes, a PIL image"):
        Submission.classify(42, model="tiny")  # type: ignore[arg-type]


def test_generate_submission_refuses_labels_that_do_not_match_count() -> None:
    with pytest.raises(InvalidJob, match="'labels' has 2 entries but 'count' is 3"):
        Submission.generate(model="tiny-gan", count=3, labels=[1, 2])
    ok = Submission.generate(model="tiny-gan", count=2, labels=[1, 2], seed=5)
    assert ok.kwargs == {"model": "tiny-gan", "count": 2, "labels": [1, 2], "seed": 5,
                         "format": "png"}
    pinned = Submission.classify(b"\x89PNG", model="tiny", version=2)
    assert pinned.kwargs == {"model": "tiny", "version": 2, "top_k": 5,
                             "inputs": [{"image": "iVBORw=="}]}


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


def stored(document: dict) -> ResultRecord:
    """A result record as a reader decodes it from Redis."""
    record = ResultRecord.decode(json.dumps(document), "j")
    assert record is not None
    return record


@pytest.mark.parametrize(("meta", "submitted", "status"), [
    (None, False, JobStatus.unknown),
    (None, True, JobStatus.queued),
    ({"status": "PENDING"}, True, JobStatus.queued),
    ({"status": "STARTED"}, True, JobStatus.started),
    ({"status": "SUCCESS"}, False, JobStatus.succeeded),
    ({"status": "FAILURE"}, True, JobStatus.failed),
    ({"status": "REVOKED"}, True, JobStatus.expired),
])
def test_status_from_the_stored_and_the_submission_record(meta: dict | None, submitted: bool,
                                                          status: JobStatus) -> None:
    assert status_of(stored(meta) if meta else None, submitted) is status


def test_failed_and_expired_results_raise_their_typed_errors() -> None:
    failed = {"status": "FAILURE", "result": {
        "exc_type": "InvalidInput", "exc_message": ["image is 3x3"],
        "exc_module": "aimass.producer.errors"}}
    with pytest.raises(InvalidInput, match="image is 3x3"):
        decode_result("j", stored(failed))
    foreign = {"status": "FAILURE", "result": {
        "exc_type": "KeyError", "exc_message": ["'x'"], "exc_module": "builtins"}}
    with pytest.raises(ModelError, match="KeyError: 'x'"):
        decode_result("j", stored(foreign))
    revoked = {"status": "REVOKED", "result": {
        "exc_type": "TaskRevokedError", "exc_message": ["expired"],
        "exc_module": "celery.exceptions"}}
    with pytest.raises(JobExpired, match="not started before its deadline"):
        decode_result("j", stored(revoked))


def test_generated_images_decode_to_pil_or_numpy() -> None:
    buffer = io.BytesIO()
    Image.fromarray(row_image(2)).save(buffer, format="PNG")
    tensor = np.arange(4, dtype=np.float32).reshape(2, 2)
    meta = {"status": "SUCCESS", "result": {"images": [
        base64.b64encode(buffer.getvalue()).decode(),
        {"dtype": "float32", "shape": [2, 2], "data": base64.b64encode(tensor.tobytes()).decode()},
    ]}}
    png, array = decode_result("j", stored(meta))["images"]
    assert isinstance(png, Image.Image) and png.size == (8, 8)
    np.testing.assert_array_equal(array, tensor)
    assert isinstance(decode_result("j", stored(meta), decode=False)["images"][0], str)


def test_grids_upscale_small_images_and_tile_them_square() -> None:
    assert upscale_factor(32, 32) == 4
    assert upscale_factor(8, 8) == 16
    assert upscale_factor(227, 227) == 1
    layout = layout_for(16, (32, 32))
    assert (layout.columns, layout.rows, layout.tile) == (4, 4, (128, 128))
    assert layout.size == (4 * 128 + 5 * 2, 4 * 128 + 5 * 2)
    images = [row_image(i % 8) for i in range(5)]
    grid = tile(images)
    assert grid.size == layout_for(5, (8, 8)).size == (3 * 128 + 8, 2 * 128 + 6)
    pixels = np.asarray(grid.convert("L"))
    x, y = layout_for(5, (8, 8)).origin(4)  # fifth tile: row 4 of the 8x8 image is white
    assert pixels[y + 4 * 16 + 8, x + 64] == 255 and pixels[y + 8, x + 64] == 0


def test_bulk_chunks_split_by_list_count_and_size() -> None:
    low = [Submission.generate(model="g", priority=Priority.low) for _ in range(5)]
    high = [Submission.generate(model="g", priority=Priority.high) for _ in range(2)]
    sizes = [len(group) for group in chunks([*low, *high, low[0]], max_jobs=3)]
    assert sizes == [3, 2, 2, 1]
    one_each = chunks(low, max_bytes=len(low[0].message()) + 1)
    assert [len(group) for group in one_each] == [1] * 5


def test_progress_line_shows_counts_rate_and_eta() -> None:
    stream = io.StringIO()
    progress = Progress(10, enabled=True, stream=stream)
    progress.advance(4, failed=1)
    line = progress.line(progress._started + 2.0)
    assert line.startswith("4/10 jobs [############------------------], 1 failed  2/s  ETA 3s")
    progress.close()
    assert stream.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress(3, enabled=False, stream=quiet).advance()
    assert quiet.getvalue() == ""


def test_client_settings_from_env_say_what_is_wrong() -> None:
    settings = ClientSettings.from_env({"REDIS_URL": "redis://h:1/2",
                                        "AIMASS_MAX_QUEUE_DEPTH": "5"})
    assert (settings.redis_url, settings.max_queue_depth) == ("redis://h:1/2", 5)
    assert ClientSettings.from_env({}).max_queue_depth == 10_000
    with pytest.raises(ValueError, match="AIMASS_MAX_QUEUE_DEPTH='lots' is not a whole"):
        ClientSettings.from_env({"AIMASS_MAX_QUEUE_DEPTH": "lots"})
    with pytest.raises(ValueError, match=r"max_queue_depth must be 0 .* or positive"):
        ClientSettings(max_queue_depth=-1)


def test_a_model_name_no_worker_could_serve_is_refused_before_sending() -> None:
    with pytest.raises(InvalidJob, match="not a valid model name"):
        Submission.classify(row_image(1), model="../tiny")
