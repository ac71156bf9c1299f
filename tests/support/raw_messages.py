"""Raw kombu envelopes for tests that bypass the client: Celery protocol-v2 task messages
as kombu's Redis transport stores them, built field by field so that a test can break
any field, pushed in pipelines, and their stored results read back."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from aimass.protocol.keys import RESULT_KEY_PREFIX

FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def new_id() -> str:
    return str(uuid.uuid4())


def json_body(args: Any, kwargs: Any, embed: Any = None) -> bytes:
    """A protocol-v2 body, ``[args, kwargs, embed]``, as JSON bytes."""
    return json.dumps([args, kwargs, EMBED if embed is None else embed]).encode()


def envelope(
    kwargs: Any = None,
    *,
    task: Any = "aimass.classify",
    job_id: Any = None,
    queue: str = "aimass.tiny",
    body: bytes | str | None = None,
    content_type: Any = "application/json",
    body_encoding: Any = "base64",
    headers: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One message envelope. ``body`` (already serialized) wins over ``kwargs``; it is
    base64-encoded when ``body_encoding`` is "base64", and put in as it is otherwise.
    ``headers``/``properties`` entries replace the defaults (``None`` values included)."""
    job_id = new_id() if job_id is None else job_id
    if body is None:
        body = json_body([], kwargs)
    if body_encoding == "base64":
        raw = body if isinstance(body, bytes) else body.encode()
        wire_body: Any = base64.b64encode(raw).decode()
    else:
        wire_body = body.decode() if isinstance(body, bytes) else body
    return {
        "body": wire_body,
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {
            "lang": "py",
            "task": task,
            "id": job_id,
            "root_id": job_id,
            "parent_id": None,
            "group": None,
            "eta": None,
            "expires": None,
            "retries": 0,
            "timelimit": [None, None],
            **(headers or {}),
        },
        "properties": {
            "correlation_id": job_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": body_encoding,
            "delivery_tag": new_id(),
            **(properties or {}),
        },
    }


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message).encode()


def push(client: redis.Redis, queue: str, messages: Iterable[bytes], chunk: int = 200) -> None:
    """LPUSH the messages onto a queue's list in pipelines, in order."""
    pipe = client.pipeline(transaction=False)
    for count, message in enumerate(messages, 1):
        pipe.lpush(queue, message)
        if count % chunk == 0:
            pipe.execute()
    pipe.execute()


def read_metas(client: redis.Redis, job_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    values = client.mget([f"{RESULT_KEY_PREFIX}{job_id}" for job_id in job_ids]) if job_ids else []
    return {job_id: json.loads(v) if v else None for job_id, v in zip(job_ids, values, strict=True)}


def wait_final(
    client: redis.Redis, job_ids: Iterable[str], timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """The final stored meta of each job; ``AssertionError`` naming the ones missing."""
    pending = list(dict.fromkeys(job_ids))
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while pending:
        metas = read_metas(client, pending)
        for job_id, meta in metas.items():
            if meta is not None and meta.get("status") in FINAL_STATES:
                done[job_id] = meta
        pending = [job_id for job_id in pending if job_id not in done]
        if pending:
            assert time.monotonic() < deadline, (
                f"{len(pending)} jobs without a final result after {timeout} s, e.g. "
                f"{pending[:5]}: {[metas[j] for j in pending[:5]]}"
            )
            time.sleep(0.05)
    return done


def failure(meta: Mapping[str, Any]) -> tuple[str, str]:
    """``(exc_type, message)`` of a FAILURE meta."""
    result = meta["result"]
    return result["exc_type"], result["exc_message"][0]
