"""The wire contract's two messages, as both ends read them: the task message a client
builds and a worker opens, and the result record a worker stores and everyone reads."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest

from aimass.protocol.errors import InvalidInput, InvalidJob
from aimass.protocol.messages import InvalidMessage, TaskMessage
from aimass.protocol.records import ResultRecord, ResultState, started_template
from aimass.worker.envelope import Envelope, peek_task_id

pytestmark = pytest.mark.unit


def built(serializer: str = "json", **kwargs: object) -> TaskMessage:
    return TaskMessage.build(
        "aimass.classify",
        "job-7",
        {"model": "m", **kwargs},
        queue="aimass.m",
        priority=0,
        serializer=serializer,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_what_the_client_encodes_the_worker_opens_unchanged(serializer: str) -> None:
    message = built(serializer, top_k=2)
    envelope = Envelope.open(message.encode(), "tag-1")
    assert envelope.message == message
    assert (envelope.task_id, envelope.task, envelope.delivery_tag) == (
        "job-7",
        "aimass.classify",
        "tag-1",
    )
    assert envelope.message.kwargs() == {"model": "m", "top_k": 2}


def test_bytes_that_are_no_envelope_are_refused_as_a_message() -> None:
    for raw, why in (
        (b"\xff\xfe", "not a kombu JSON envelope"),
        (b"[1, 2]", "not an object"),
        (b"[" * 5000, "nested too deeply|not a kombu JSON envelope"),
    ):
        with pytest.raises(InvalidMessage, match=why):
            Envelope.open(raw, "t")


def test_a_message_refused_unread_keeps_only_its_job_id() -> None:
    raw = built().encode()
    envelope = Envelope.unread(raw, "t")
    assert envelope.task_id == peek_task_id(raw) == "job-7"
    assert envelope.message is None and envelope.task is None and envelope.content_type == ""


def with_body(
    body: object, content_type: str = "application/json", encoding: str | None = "base64"
) -> TaskMessage:
    properties = {"body_encoding": encoding} if encoding else {}
    return TaskMessage(
        {"id": "j", "task": "aimass.classify"}, properties, content_type, "utf-8", body
    )


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (with_body("", "application/x-python-serialize"), "pickle is never accepted"),
        (with_body("not base64!"), "not valid base64"),
        (with_body(base64.b64encode(b"{").decode()), "not valid application/json"),
        (with_body(base64.b64encode(b'"text"').decode()), "not a Celery task body"),
        (with_body(base64.b64encode(b"[[1], {}, {}]").decode()), "keyword arguments only"),
    ],
)
def test_a_body_the_worker_cannot_take_is_an_invalid_job_that_says_why(
    message: TaskMessage, error: str
) -> None:
    with pytest.raises(InvalidJob, match=error):
        message.kwargs()


def test_protocol_1_bodies_plain_bodies_and_msgpack_by_its_other_name_are_read() -> None:
    assert with_body({"kwargs": {"model": "m"}}, encoding=None).kwargs() == {"model": "m"}
    packed = base64.b64encode(msgpack.packb([[], {"model": "m"}, {}])).decode()
    assert with_body(packed, "application/msgpack").kwargs() == {"model": "m"}


def test_a_result_record_encodes_to_what_celery_stores_and_decodes_back() -> None:
    record = ResultRecord.success("job-7", {"model": "m", "predictions": []})
    document = json.loads(record.encode())
    assert list(document) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert document["status"] == "SUCCESS" and document["task_id"] == "job-7"
    assert ResultRecord.decode(record.encode()) == record
    assert (record.final, record.outcome, record.error_type) == (True, "succeeded", "")


def test_each_record_carries_its_outcome() -> None:
    failed = ResultRecord.failure("j", InvalidInput("inputs[0]: not PNG"))
    assert (failed.state, failed.outcome, failed.error_type, failed.error_message) == (
        ResultState.failed,
        "failed",
        "InvalidInput",
        "inputs[0]: not PNG",
    )
    assert failed.result["exc_module"] == "aimass.producer.errors"
    revoked = ResultRecord.revoked("j", "expired")
    assert (revoked.outcome, revoked.error_type, revoked.final) == (
        "expired",
        "TaskRevokedError",
        True,
    )
    started = ResultRecord.started("j", "w@h")
    assert (started.outcome, started.final, started.result) == (
        "pending",
        False,
        {"hostname": "w@h"},
    )
    pending = ResultRecord.decode(b'{"status": "PENDING", "result": null}', "j")
    assert pending is not None and pending.state is ResultState.pending and not pending.final


def test_a_stored_value_that_is_no_record_reads_as_a_model_error() -> None:
    assert ResultRecord.decode(None) is None and ResultRecord.decode(b"") is None
    for raw, why in ((b"\xff no", "is not JSON"), (b"[1]", "not an object (a list)")):
        record = ResultRecord.decode(raw, "j")
        assert record is not None and record.outcome == "failed"
        assert record.error_type == "ModelError" and why in record.error_message


def test_the_take_script_writes_the_started_record_byte_for_byte() -> None:
    head, tail = started_template('aimass-cpu-1@host "x"')
    # What the Lua script does: head .. cjson.encode(id) .. tail.
    assert (
        head + json.dumps("job-7").encode() + tail
        == ResultRecord.started("job-7", 'aimass-cpu-1@host "x"').encode()
    )
