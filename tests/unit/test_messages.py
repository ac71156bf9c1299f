"""The task message (aimass.protocol.messages): priorities, the protocol-v2 envelope, a
short repr of the kwargs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from aimass.protocol.contract import Priority
from aimass.protocol.messages import (
    TaskMessage,
    kwargs_repr,
    message_list,
    priority_step,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("priority", "step", "name"),
    [
        (Priority.high, 0, "aimass.digits"),
        (1, 0, "aimass.digits"),
        (Priority.normal, 3, "aimass.digits\x06\x163"),
        (5, 3, "aimass.digits\x06\x163"),
        (Priority.low, 6, "aimass.digits\x06\x166"),
        (9, 9, "aimass.digits\x06\x169"),
    ],
)
def test_priorities_land_in_the_lists_kombu_reads(priority: int, step: int, name: str) -> None:
    assert priority_step(priority) == step
    assert message_list("digits", priority) == name


def test_a_priority_out_of_range_says_the_range() -> None:
    with pytest.raises(ValueError, match=r"between 0 .* and 9, got 12"):
        priority_step(12)


def test_task_message_is_a_protocol_v2_envelope_with_json_kwargs() -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    built = TaskMessage.build(
        "aimass.generate",
        "job-1",
        {"model": "m", "count": 2},
        queue="aimass.m",
        priority=6,
        expires=expires,
    )
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
    text = kwargs_repr(
        {"model": "digits", "inputs": [{"image": "A" * 5000}] * 3, "note": "x" * 100}
    )
    assert "'inputs': '<3 items>'" in text and "'note': '<100 chars>'" in text
    batch = kwargs_repr({"batch": {"dtype": "uint8", "shape": [16, 8, 8], "data": "A" * 900}})
    assert batch == "{'batch': {'dtype': 'uint8', 'shape': [16, 8, 8], 'data': '<900 chars>'}}"
    assert len(kwargs_repr({f"k{i}": i for i in range(500)})) == 1024
