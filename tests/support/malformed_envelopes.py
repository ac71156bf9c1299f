"""Malformed-input cases of the envelope: what kombu and Celery carry around a job's
keyword arguments (encodings, headers, task names, ids, bodies)."""

from __future__ import annotations

import json
import pickle
import time

import msgpack

from tests.support import raw_messages as raw
from tests.support.malformed_parts import (
    CLASSIFY,
    GOOD_IMAGE,
    GOOD_PNG,
    Corpus,
    Marker,
    classify,
)


def envelope_cases(c: Corpus) -> None:
    for name, message in [
        ("empty", b""),
        ("garbage", b"garbage"),
        ("binary", b"\xff\xfe\x00\x01"),
        ("open brace", b"{"),
        ("truncated json", b'{"body": "x", "headers": {"id": "a'),
        ("null", b"null"),
        ("number", b"42"),
        ("string", b'"a string"'),
        ("array", b"[]"),
        ("array of numbers", b"[1, 2, 3]"),
        ("true", b"true"),
        ("empty object", b"{}"),
        ("headers a list", b'{"headers": [], "body": ""}'),
        ("headers a string", b'{"headers": "x", "properties": 5}'),
        ("no id anywhere", b'{"headers": {"task": "aimass.classify"}, "body": ""}'),
        (
            "id null",
            raw.encode(raw.envelope(classify(), job_id="", properties={"correlation_id": None})),
        ),
        ("nested array", b"[" * 50 + b"]" * 50),
        ("utf-16", json.dumps({"headers": {"id": "x"}}).encode("utf-16")),
    ]:
        c.refused(name, message)
    c.job(
        "no task header",
        classify(),
        "InvalidJob",
        "no 'task' header.*protocol 2",
        headers={"task": None},
    )
    c.job("empty task", classify(), "InvalidJob", "no 'task' header", task="")
    for task in ("celery.ping", "aimass.train", "aimass.classify ", "AIMASS.CLASSIFY", 123):
        c.job(
            f"task {task!r}",
            classify(),
            "InvalidJob",
            "unknown task.*aimass.classify, aimass.generate, aimass.infer",
            task=task,
        )
    pickled = pickle.dumps([[], classify(), {}, Marker()])
    for content_type in ("application/x-python-serialize", "application/x-pickle"):
        c.job(
            f"pickle as {content_type}",
            body=pickled,
            content_type=content_type,
            expect="InvalidJob",
            match="refused.*pickle is never accepted",
        )
    for content_type in (
        "application/x-yaml",
        "text/plain",
        "application/data",
        "",
        None,
        5,
        "application/jsonx",
    ):
        c.job(
            f"content type {content_type!r}",
            classify(),
            "InvalidJob",
            "content type .* is refused; send application/json",
            content_type=content_type,
        )
    for content_type in ("application/json; charset=utf-8", "APPLICATION/JSON"):
        c.job(f"content type {content_type!r}", classify(), content_type=content_type)
    message = raw.envelope(job_id=raw.new_id())
    message["body"] = "!!!not base64"
    c.add(
        "body not base64",
        raw.encode(message),
        message["headers"]["id"],
        "InvalidJob",
        "not valid base64",
    )
    c.job("body missing", body=b"", expect="InvalidJob", match="not valid application/json")
    c.job(
        "body base64 of garbage",
        body=b"\x00\x01garbage",
        expect="InvalidJob",
        match="not valid application/json",
    )
    c.job(
        "body base64 of bad utf-8",
        body=b'[[], {"model": "\xff"}, {}]',
        expect="InvalidJob",
        match="not valid application/json",
    )
    c.job("body raw json text", body=raw.json_body([], classify()), body_encoding=None)
    body = json.loads(raw.json_body([], classify()))
    message = raw.envelope(job_id=raw.new_id(), body_encoding=None)
    message["body"] = body  # already decoded, as kombu keeps it for some serializers
    c.add("body inline", raw.encode(message), message["headers"]["id"], "SUCCESS")
    for name, body_bytes in [
        ("body a number", b"5"),
        ("body an object", b'{"model": "tiny"}'),
        ("body two elements", json.dumps([[], classify()]).encode()),
        ("body four elements", json.dumps([[], classify(), {}, 1]).encode()),
        ("body a string", b'"kwargs"'),
        ("body null", b"null"),
    ]:
        c.job(name, body=body_bytes, expect="InvalidJob", match="not a Celery task body")
    c.job(
        "positional args",
        body=raw.json_body([GOOD_IMAGE], classify()),
        expect="InvalidJob",
        match="keyword arguments only; got 1 positional",
    )
    c.job(
        "positional args only",
        body=raw.json_body(["tiny", [GOOD_IMAGE]], {}),
        expect="InvalidJob",
        match="keyword arguments only; got 2 positional",
    )
    job_id = raw.new_id()
    protocol1 = json.dumps(
        {"task": CLASSIFY, "id": job_id, "args": [], "kwargs": classify()}
    ).encode()
    c.job(
        "protocol 1",
        body=protocol1,
        job_id=job_id,
        headers={"task": None, "id": None},
        expect="InvalidJob",
        match="protocol 1.*not accepted",
    )
    c.job("protocol 1 body, protocol 2 headers", body=protocol1)
    c.job(
        "body nested 5000 deep",
        body=b"[" * 5000 + b"]" * 5000,
        expect="InvalidJob",
        match="nested too deeply",
    )
    c.job(
        "msgpack",
        body=msgpack.packb([[], classify(inputs=[{"image": GOOD_PNG}]), {}]),
        content_type="application/x-msgpack",
    )
    c.job(
        "msgpack other name",
        body=msgpack.packb([[], classify(), {}]),
        content_type="application/msgpack",
    )
    c.job(
        "msgpack garbage",
        body=b"\xc1\xc1\xc1",
        content_type="application/x-msgpack",
        expect="InvalidJob",
        match="not valid application/x-msgpack",
    )
    c.job(
        "msgpack truncated",
        body=msgpack.packb([[], classify(), {}])[:20],
        content_type="application/x-msgpack",
        expect="InvalidJob",
        match="not valid application/x-msgpack",
    )
    c.job(
        "msgpack nested deep",
        body=b"\x91" * 5000 + b"\xc0",
        content_type="application/x-msgpack",
        expect="InvalidJob",
        match="not valid",
    )
    c.job(
        "eta",
        classify(),
        "InvalidJob",
        "cannot be delayed",
        headers={"eta": "2020-01-01T00:00:00+00:00"},
    )
    c.job("countdown", classify(), "InvalidJob", "cannot be delayed", headers={"countdown": 5})
    c.job("expired", classify(), "REVOKED", headers={"expires": "2000-01-01T00:00:00+00:00"})
    c.job("expires garbage", classify(), headers={"expires": "next tuesday"})
    c.job("expires a number", classify(), headers={"expires": 12})
    c.job("expires far ahead", classify(), headers={"expires": "2999-01-01T00:00:00"})
    c.job("retries garbage", classify(), headers={"retries": "x", "timelimit": "y"})
    c.job("no delivery tag", classify(), properties={"delivery_tag": None})
    c.job("delivery info a list", classify(), properties={"delivery_info": [1]})
    c.job("priority garbage", classify(), properties={"priority": "urgent"})
    message = raw.envelope(classify(), job_id=raw.new_id())
    message["properties"] = "not an object"
    # Without properties.body_encoding the base64 body is read as JSON text.
    c.add(
        "properties a string",
        raw.encode(message),
        message["headers"]["id"],
        "InvalidJob",
        "not valid application/json",
    )
    c.job("id only in correlation_id", classify(), job_id=raw.new_id(), headers={"id": None})
    c.job("numeric id", classify(), job_id=int(time.time() * 1e6))
    c.job("unicode id", classify(), job_id=f"ключ ✓ {raw.new_id()}")
    c.job("long id", classify(), job_id="x" * 1000 + raw.new_id())
    twice = raw.new_id()
    c.job("same id, first", classify(), job_id=twice)
    c.job("same id, second", classify(), job_id=twice)
    job_id = raw.new_id()
    deep = (
        raw.encode(raw.envelope(classify(), job_id=job_id))[:-1]
        + b', "deep": '
        + b"[" * 995
        + b"]" * 995
        + b"}"
    )
    # Deeper than Python's decoder goes in the consumer thread, within Redis's limit (1000).
    c.add("envelope nested 995 deep", deep, job_id, ("InvalidJob", "SUCCESS"), "nested too deeply")
    job_id = raw.new_id()
    bad_utf8 = raw.encode(raw.envelope(classify(), job_id=job_id)).replace(
        b'"lang": "py"', b'"lang": "p\xffy"'
    )
    c.add("envelope with bad utf-8", bad_utf8, job_id, "InvalidJob", "not a kombu JSON")
    # Recorded under its own tag by the take (Redis's JSON decoder lets the byte through),
    # which the worker must hand back, byte for byte, to acknowledge it.
    job_id = raw.new_id()
    message = raw.encode(raw.envelope(classify(), job_id=job_id))
    tag = json.loads(message)["properties"]["delivery_tag"].encode()
    bad_tag = message.replace(tag, tag[:8] + b"\xff" + tag[8:])
    c.add("delivery tag with bad utf-8", bad_tag, job_id, "InvalidJob", "not a kombu JSON")
    c.job(
        "50 MB message",
        classify(inputs=[{"image": "A" * 37_000_000}]),
        "PayloadTooLarge",
        r"message is \d+ bytes.*AIMASS_MAX_MESSAGE_BYTES",
    )
