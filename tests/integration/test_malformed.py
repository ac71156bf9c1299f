"""Malformed input sent past the client (which validates): raw kombu envelopes pushed
onto the queues, a corpus of a few hundred bad messages and property-based fuzzing.

Every message with a job id gets a typed result (a FAILURE whose exc_type is one of the
contract's errors, with a message that says what was wrong); a message without one is
refused (logged and acknowledged). ``ModelError`` is the answer only where the model
itself fails (one case, whose inputs overflow it); anywhere else it would mean a bug
turned into an error. The
worker never dies, and the good jobs sent among the bad ones all succeed.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimass.embedded_redis import RedisServer
from aimass.protocol.keys import RUNS_HASH
from tests.support import raw_messages as raw
from tests.support.malformed_corpus import build_corpus
from tests.support.malformed_parts import (
    CLASSIFY,
    GENERATE,
    GOOD_IMAGE,
    TYPED,
    Case,
    Marker,
    b64,
    classify,
    generate,
    png_claiming,
)
from tests.support.processes import WorkerProcess, aimass_command, child_env

pytestmark = pytest.mark.integration

# -- the worker under test ------------------------------------------------------------------


@dataclass
class Target:
    url: str
    worker: WorkerProcess
    store: redis.Redis

    def healthy(self) -> None:
        assert self.worker.alive(), self.worker.log()
        done = subprocess.run(
            [*aimass_command(), "check"],
            env=child_env(self.url),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def drained(self) -> None:
        deadline = time.monotonic() + 10
        while self.store.hlen("unacked") or any(
            self.store.llen(name) for name in self.store.keys("aimass.tiny*")
        ):
            assert time.monotonic() < deadline, "messages left unacknowledged or queued"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[Target]:
    """One worker on a Redis of its own, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("malformed")
    server = RedisServer(folder / "redis").start()
    worker = WorkerProcess(server.url, model_repository, folder / "worker.log").start()
    store = redis.Redis.from_url(server.url)
    yield Target(server.url, worker, store)
    store.close()
    worker.stop()
    server.stop()


def check_outcome(case: Case, meta: dict[str, Any] | None) -> str | None:
    """What is wrong with a case's stored result, or None."""
    if meta is None:
        return "no result"
    status = meta["status"]
    if status in ("SUCCESS", "REVOKED"):
        return None if status in case.expect else f"{status}, expected {case.expect}"
    exc_type, message = raw.failure(meta)
    if exc_type not in case.expect:
        return f"{exc_type}: {message}; expected {case.expect}"
    if not message or not re.search(case.match, message, re.DOTALL):
        return f"{exc_type} message {message!r} does not match {case.match!r}"
    return None


def test_a_corpus_of_malformed_messages_gets_typed_failures_and_the_good_jobs_succeed(
    target: Target,
) -> None:
    if Marker.path.exists():
        Marker.path.rmdir()
    cases = build_corpus()
    with_id = [case for case in cases if case.job_id is not None]
    refused = [case for case in cases if case.job_id is None]
    bad = [case for case in cases if "SUCCESS" not in case.expect]
    assert len(bad) >= 200, len(bad)
    started = time.monotonic()
    pipe = target.store.pipeline(transaction=False)
    for case in cases:
        pipe.lpush(case.queue, case.message)
    pipe.execute()
    metas = raw.wait_final(target.store, [case.job_id for case in with_id], timeout=60)
    elapsed = time.monotonic() - started
    problems = {
        case.name: problem
        for case in with_id
        if (problem := check_outcome(case, metas.get(case.job_id))) is not None
    }
    assert not problems, problems
    target.drained()
    log = target.worker.log_path.read_text(errors="replace")
    refusals = log.count("dropped a queue entry that is not a kombu message") + log.count(
        "refused message"
    )
    assert refusals >= len(refused)
    assert "Traceback" not in log
    assert not Marker.path.exists(), "something unpickled a message"
    assert not target.store.exists("celery-task-meta-")  # nothing stored under an empty id
    target.healthy()
    print(
        f"{len(cases)} messages ({len(bad)} bad, {len(refused)} without an id) "
        f"answered in {elapsed:.1f} s"
    )


# -- fuzzing ----------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("AIMASS_FUZZ_EXAMPLES", "120")),
    derandomize="AIMASS_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
images = (
    st.sampled_from([GOOD_IMAGE, b64(png_claiming(9000, 9000)), b64(b"\x93NUMPY")])
    | st.binary(max_size=80).map(b64)
    | st.text(max_size=12)
    | json_values
)
tensors = (
    st.fixed_dictionaries(
        {},
        optional={
            "dtype": st.sampled_from(["float32", "uint8", "float64", "bool", "x"]) | json_values,
            "shape": st.lists(st.integers(-3, 2**40) | st.sampled_from([8, 1]), max_size=4)
            | json_values,
            "data": st.binary(max_size=300).map(b64) | json_values,
        },
    )
    | json_values
)
inputs = (
    st.lists(
        st.fixed_dictionaries({}, optional={"image": images, "tensor": tensors}) | json_values,
        max_size=3,
    )
    | json_values
)
models = st.sampled_from(["tiny", "tiny-gan", "nope", "../tiny", ""]) | json_values
small_ints = st.integers(-3, 1100) | json_values
kwargs_strategy = (
    st.fixed_dictionaries(
        {},
        optional={
            "model": models,
            "version": st.sampled_from([None, 1, 2]) | json_values,
            "top_k": small_ints,
            "inputs": inputs,
            "count": small_ints,
            "labels": st.lists(st.integers(-2, 9), max_size=4) | json_values,
            "seed": st.integers(-2, 2**64) | json_values,
            "format": st.sampled_from(["png", "tensor", "gif"]) | json_values,
        },
    )
    | json_values
)


def send_and_wait(
    target: Target, message: bytes, job_ids: list[str], queue: str = "aimass.tiny"
) -> dict[str, dict[str, Any]]:
    target.store.lpush(queue, message)
    deadline = time.monotonic() + 30
    while True:
        metas = raw.read_metas(target.store, job_ids)
        if all(m is not None and m.get("status") in raw.FINAL_STATES for m in metas.values()):
            return metas  # type: ignore[return-value]
        assert time.monotonic() < deadline, f"no result for {job_ids}: {metas}"
        time.sleep(0.003)


def assert_typed(meta: dict[str, Any]) -> None:
    assert meta["status"] in ("SUCCESS", "FAILURE"), meta
    if meta["status"] == "FAILURE":
        exc_type, message = raw.failure(meta)
        overflow = exc_type == "ModelError" and "produced NaN or infinite scores" in message
        assert (exc_type in TYPED or overflow) and message, meta


@FUZZ
@given(kwargs=kwargs_strategy, task=st.sampled_from([CLASSIFY, GENERATE]))
def test_fuzzed_job_arguments_get_a_result_or_a_typed_failure(
    target: Target, kwargs: Any, task: str
) -> None:
    job_id = raw.new_id()
    message = raw.encode(raw.envelope(body=raw.json_body([], kwargs), task=task, job_id=job_id))
    assert_typed(send_and_wait(target, message, [job_id])[job_id])


finite_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
envelope_fields = st.fixed_dictionaries(
    {},
    optional={
        "body": st.binary(max_size=60).map(b64) | finite_json,
        "content-type": st.sampled_from(
            ["application/json", "application/x-msgpack", "application/x-python-serialize"]
        )
        | finite_json,
        "content-encoding": finite_json,
        "headers": st.fixed_dictionaries(
            {},
            optional={
                "task": st.sampled_from([CLASSIFY, GENERATE]) | finite_json,
                "eta": finite_json,
                "expires": finite_json,
                "countdown": finite_json,
                "lang": finite_json,
            },
        )
        | finite_json,
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "body_encoding": st.sampled_from(["base64"]) | finite_json,
                "delivery_tag": finite_json,
                "delivery_info": finite_json,
                "priority": finite_json,
            },
        )
        | finite_json,
    },
)


@FUZZ
@given(fields=envelope_fields, junk=st.binary(max_size=40))
def test_fuzzed_envelopes_get_a_typed_answer_and_the_worker_goes_on(
    target: Target, fields: dict[str, Any], junk: bytes
) -> None:
    job_id = raw.new_id()
    message = dict(fields)
    headers = message.get("headers")
    message["headers"] = {**(headers if isinstance(headers, dict) else {}), "id": job_id}
    probe_id = raw.new_id()
    probe = raw.encode(raw.envelope(classify(), job_id=probe_id))
    target.store.lpush("aimass.tiny", junk)  # not a message at all: dropped
    metas = send_and_wait(target, raw.encode(message), [job_id])
    assert metas[job_id]["status"] in raw.FINAL_STATES
    if metas[job_id]["status"] == "FAILURE":
        assert raw.failure(metas[job_id])[0] in TYPED, metas[job_id]
    # The worker still takes jobs after it.
    assert send_and_wait(target, probe, [probe_id])[probe_id]["status"] == "SUCCESS"


# -- a job on another model's queue -----------------------------------------------------------


def test_a_job_on_another_models_queue_is_served_if_the_worker_has_that_model(
    target: Target, redis_url: str, model_repository: Path, start_worker
) -> None:
    served_id = raw.new_id()
    message = raw.encode(
        raw.envelope(generate(), task=GENERATE, job_id=served_id, queue="aimass.tiny")
    )
    assert send_and_wait(target, message, [served_id])[served_id]["status"] == "SUCCESS"
    # A worker that serves only tiny answers UnknownModel, naming what it serves.
    start_worker(redis_url, model_repository, "--models", "tiny")
    store = redis.Redis.from_url(redis_url)
    other_id = raw.new_id()
    store.lpush(
        "aimass.tiny",
        raw.encode(raw.envelope(generate(), task=GENERATE, job_id=other_id, queue="aimass.tiny")),
    )
    meta = raw.wait_final(store, [other_id], timeout=30)[other_id]
    assert raw.failure(meta) == (
        "UnknownModel",
        "model 'tiny-gan' is not served by this worker (models: tiny)",
    )


def test_the_worker_survived_all_of_it(target: Target) -> None:
    target.drained()
    # Every job counted as taken (its first run) had its count taken away as it was
    # answered, whatever was wrong with it: none is left to grow the runs hash.
    assert not target.store.exists(RUNS_HASH)
    target.healthy()
    assert "Traceback" not in target.worker.log_path.read_text(errors="replace")
