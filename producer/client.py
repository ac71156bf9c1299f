"""The producer client: submit jobs, then poll or wait for their results.

>>> client = Client("redis://localhost:6379/0")
>>> job = client.classify("seven.png", model="digits")
>>> job.result(timeout=10)["predictions"][0][0]["label"]
'7'
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

import redis
from celery import Celery

from producer.codecs import ImageLike, encode_image, png_from_base64, tensor_from_bytes
from producer.contract import (
    PRIORITY_SEPARATOR,
    PRIORITY_STEPS,
    JobKind,
    Priority,
    queue_name,
    task_name,
)
from producer.errors import JobTimeout, error_from_result
from producer.keys import DEFAULT_RESULT_TTL_S, result_key, submitted_key

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class JobStatus(StrEnum):
    queued = "queued"  # submitted, not yet taken by a worker's batch
    started = "started"  # a worker is running it
    succeeded = "succeeded"  # the result is stored
    failed = "failed"  # the typed error is stored
    expired = "expired"  # not started before its deadline; dropped
    unknown = "unknown"  # nobody submitted this id (or its records have expired)


_CELERY_STATES = {
    "PENDING": JobStatus.queued,
    "RECEIVED": JobStatus.queued,
    "RETRY": JobStatus.queued,
    "STARTED": JobStatus.started,
    "SUCCESS": JobStatus.succeeded,
    "FAILURE": JobStatus.failed,
    "REVOKED": JobStatus.expired,
}
_FINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def producer_config(url: str) -> dict[str, Any]:
    """Celery settings a producer needs; they must agree with the workers' on
    serialization and on the priority queues' names."""
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json", "msgpack"],
        "result_accept_content": ["json"],
        "broker_transport_options": {
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEPARATOR,
            "queue_order_strategy": "priority",
        },
        "broker_connection_retry_on_startup": True,
        "task_create_missing_queues": True,
    }


class Client:
    """Submits jobs to the workers through Redis and reads their results."""

    def __init__(self, url: str = DEFAULT_REDIS_URL, *,
                 result_ttl_s: int = DEFAULT_RESULT_TTL_S) -> None:
        self.url = url
        self.result_ttl_s = result_ttl_s
        self.redis = redis.Redis.from_url(url)
        self._celery = Celery("aimass-producer", set_as_current=False)
        self._celery.conf.update(producer_config(url))

    @classmethod
    def from_env(cls) -> Client:
        """A client for ``$REDIS_URL`` (default ``redis://127.0.0.1:6379/0``)."""
        url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
        ttl = int(os.environ.get("AIMASS_RESULT_TTL_S") or DEFAULT_RESULT_TTL_S)
        return cls(url, result_ttl_s=ttl)

    def close(self) -> None:
        self.redis.close()
        self._celery.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def classify(self, inputs: ImageLike | Sequence[ImageLike], *, model: str,
                 version: int | None = None, top_k: int = 5, job_id: str | None = None,
                 priority: Priority = Priority.normal) -> Job:
        """Submit images (paths, bytes, PIL images or numpy arrays; one or many)."""
        items: list[ImageLike] = (list(inputs) if isinstance(inputs, list | tuple)
                                  else [inputs])  # type: ignore[list-item]
        kwargs = {
            "model": model, "version": version, "top_k": top_k,
            "inputs": [{"image": _b64(encode_image(item))} for item in items],
        }
        return self.submit(JobKind.classify, kwargs, job_id=job_id, priority=priority)

    def generate(self, *, model: str, count: int = 1, labels: Sequence[int] | None = None,
                 seed: int | None = None, format: str = "png", version: int | None = None,
                 job_id: str | None = None, priority: Priority = Priority.normal) -> Job:
        """Ask a generator for ``count`` images, of the given classes if ``labels``."""
        kwargs = {"model": model, "version": version, "count": count,
                  "labels": list(labels) if labels is not None else None,
                  "seed": seed, "format": format}
        return self.submit(JobKind.generate, kwargs, job_id=job_id, priority=priority)

    def submit(self, kind: JobKind, kwargs: dict[str, Any], *, job_id: str | None = None,
               priority: Priority = Priority.normal) -> Job:
        """Enqueue one job with contract kwargs. A ``job_id`` submitted twice runs once."""
        job_id = job_id or str(uuid.uuid4())
        record = json.dumps({"kind": str(kind), "model": kwargs["model"],
                             "submitted_at": time.time()})
        if self.redis.set(submitted_key(job_id), record, nx=True, ex=self.result_ttl_s):
            self._celery.send_task(task_name(kind), kwargs=kwargs, task_id=job_id,
                                   queue=queue_name(kwargs["model"]), priority=int(priority))
        return Job(self, job_id, kind)

    def job(self, job_id: str) -> Job:
        """Re-attach to a job by its id, from any process."""
        return Job(self, job_id, None)


class Job:
    """A submitted job: its id, its status, and (when done) its result."""

    def __init__(self, client: Client, job_id: str, kind: JobKind | None) -> None:
        self.client = client
        self.id = job_id
        self.kind = kind

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def _meta(self) -> dict[str, Any] | None:
        raw = self.client.redis.get(result_key(self.id))
        return json.loads(raw) if raw else None

    def status(self) -> JobStatus:
        meta = self._meta()
        if meta is not None:
            return _CELERY_STATES.get(meta.get("status", ""), JobStatus.queued)
        if self.client.redis.exists(submitted_key(self.id)):
            return JobStatus.queued
        return JobStatus.unknown

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the result (pub/sub, no busy loop) and return it decoded; raise the
        job's typed error if it failed, ``JobTimeout`` if ``timeout`` passes first."""
        meta = self._wait(timeout)
        return self._decode(meta)

    def forget(self) -> None:
        """Delete the job's stored result and submission record."""
        self.client.redis.delete(result_key(self.id), submitted_key(self.id))

    def _wait(self, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        key = result_key(self.id)
        pubsub = self.client.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(key)
            meta = self._meta()
            while meta is None or meta.get("status") not in _FINAL:
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(f"job {self.id} did not finish within {timeout} s "
                                     f"(status: {self.status()})")
                wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                message = pubsub.get_message(timeout=max(0.0, wait))
                if message is not None:
                    meta = json.loads(message["data"])
                elif meta is None or wait >= 1.0:
                    meta = self._meta()  # a publish can be missed across a reconnect
        finally:
            pubsub.close()
        return meta

    def _decode(self, meta: dict[str, Any]) -> dict[str, Any]:
        status = meta.get("status")
        result = meta.get("result")
        if status == "SUCCESS":
            if isinstance(result, dict) and "images" in result:
                result["images"] = [_decode_image(image) for image in result["images"]]
            return dict(result or {})
        if isinstance(result, dict) and "exc_type" in result:
            message = result.get("exc_message")
            text = message[0] if isinstance(message, list) and message else str(message)
            raise error_from_result(result["exc_type"], text)
        raise error_from_result("JobExpired" if status == "REVOKED" else "ModelError",
                                f"job {self.id} ended as {status}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_image(image: Any) -> Any:
    if isinstance(image, str):
        return png_from_base64(image)
    if isinstance(image, dict):
        data = base64.b64decode(image["data"])
        return tensor_from_bytes(image["dtype"], image["shape"], data, max_bytes=len(data))
    return image


def wait_all(jobs: Iterable[Job], timeout: float | None = None) -> list[dict[str, Any]]:
    """Results of many jobs, in order."""
    deadline = None if timeout is None else time.monotonic() + timeout
    results = []
    for job in jobs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        results.append(job.result(timeout=left))
    return results
