"""Producers: closed-loop load from processes of their own, with per-job latency.

Run as ``python -m aimass.bench.load SPEC_JSON``. The process talks to the benchmark
through JSON lines: it says ``ready``, then for each ``run`` command keeps
``concurrency`` jobs in flight, measures the jobs that finish inside the window, says
``window`` when the window closes, keeps the load on until ``stop``, drains, and answers
with a ``result``. A ``bulk`` command sends ``jobs`` jobs at once and answers with a
``result`` when the last is answered. ``exit`` (or end of input) ends it.

Results are read from what the Celery Redis result backend publishes when it stores a
result (the same publication ``Job.result`` waits on), through one pattern
subscription per producer; jobs whose publication was missed are read with MGET.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import queue
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import redis
from PIL import Image

from aimass.protocol.keys import RESULT_KEY_PREFIX
from aimass.protocol.pubsub import next_message
from aimass.protocol.records import ResultRecord, ResultState

POLL_AFTER_S = 1.0  # read a job's result directly when no publication came in this long
POOL_SIZE = 32  # distinct inputs each producer cycles through


@dataclass(frozen=True)
class LoadSpec:
    """What one producer sends: to which system, which model, and in what form."""

    redis_url: str
    system: str  # "aimass" or "naive"
    model: str
    input_shape: list[int]  # one input without the batch dimension, HxWxC
    producer_index: int = 0
    drain_timeout_s: float = 60.0


@dataclass
class Window:
    """What one producer saw during one measurement window."""

    concurrency: int
    images_per_job: int
    t0: float
    t1: float = 0.0
    completed: int = 0
    failed: int = 0
    images: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    # Jobs by the size their batch was padded to (``timing.bucket``): only workers that
    # pad to fixed sizes (GPUs) report one, so on the CPU this stays empty.
    bucket_sizes: Counter[int] = field(default_factory=Counter)
    # The results' own timing (aimass): wait in the worker before the batch ran, and
    # the batch's session.run time.
    worker_queue_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    submitted: int = 0
    polled: int = 0  # finished jobs found by MGET rather than by their publication
    unfinished: int = 0  # still in flight when the drain timed out
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        data["bucket_sizes"] = {str(k): v for k, v in sorted(self.bucket_sizes.items())}
        return data


def synthetic_inputs(shape: list[int], count: int, seed: int) -> list[np.ndarray]:
    """Inputs for a model of ``shape`` (one input, no batch dimension): uint8 images for
    an image model (HxWxC), float32 feature vectors from a standard normal otherwise (a
    tabular model standardises its features, so their scale does not change its cost)."""
    if len(shape) == 3:
        return synthetic_pixels(shape, count, seed)
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]


def synthetic_pixels(shape: list[int], count: int, seed: int) -> list[np.ndarray]:
    """Smooth uint8 images (low-frequency patterns plus a little noise), so that PNG and
    JPEG sizes resemble real pictures rather than incompressible noise."""
    rng = np.random.default_rng(seed)
    height, width, channels = shape
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (6, 6, channels), dtype=np.uint8)
        mode = "L" if channels == 1 else "RGB"
        source = coarse[:, :, 0] if channels == 1 else coarse
        smooth = np.asarray(
            Image.fromarray(source, mode=mode).resize((width, height), Image.Resampling.BICUBIC),
            dtype=np.int16,
        )
        smooth = smooth.reshape(height, width, channels)
        noise = rng.integers(-8, 9, smooth.shape, dtype=np.int16)
        images.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))
    return images


def bulk_images(encoding: str, shape: list[int], count: int = 32) -> list[Any]:
    """The broker benchmarks' inputs: ``count`` smooth images as their ``uint8`` pixels or
    as ``png`` bytes."""
    from aimass.protocol.codecs import array_to_png

    pixels = synthetic_pixels(shape, count, seed=0)
    return list(pixels) if encoding == "uint8" else [array_to_png(p) for p in pixels]


def one_image_jobs(images: list[Any], count: int, model: str = "digits") -> list[Any]:
    """``count`` classify jobs of one image each, for ``model``, taking ``images`` in
    turn: what the broker benchmarks send."""
    from aimass.producer.submission import Submission

    return [Submission.classify(images[i % len(images)], model=model) for i in range(count)]


def recommended_input(pixels: np.ndarray) -> np.ndarray | bytes:
    """What the docs recommend sending: small images as their uint8 pixels (the client
    sends them as raw uint8 tensors: nothing to decode), photos as JPEG, feature vectors
    as they are (the client sends them as ``features``)."""
    if pixels.dtype != np.uint8 or pixels.shape[2] == 1:
        return pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def float_tensor_b64(pixels: np.ndarray) -> str:
    """What a first Celery worker is sent: the preprocessed float32 tensor, base64
    (feature vectors need no preprocessing)."""
    values = pixels if pixels.dtype == np.float32 else pixels.astype(np.float32) / 255.0
    return base64.b64encode(values.tobytes()).decode("ascii")


Submit = Callable[[list[str], int], None]  # job ids, images per job


def aimass_submitter(spec: LoadSpec) -> tuple[Submit, Callable[[], None]]:
    """Submit classify jobs of images, sent as the docs recommend, through the client."""
    from aimass.producer.client import Client

    client = Client(spec.redis_url)
    images = [
        recommended_input(p)
        for p in synthetic_inputs(spec.input_shape, POOL_SIZE, spec.producer_index)
    ]
    counter = itertools.count()

    def job_images(count: int) -> list[np.ndarray | bytes]:
        return [images[next(counter) % POOL_SIZE] for _ in range(count)]

    def submit(job_ids: list[str], images_per_job: int) -> None:
        jobs = [(job_id, job_images(images_per_job)) for job_id in job_ids]
        submit_classify_jobs(client, spec.model, jobs)

    return submit, client.close


def submit_classify_jobs(
    client: Any, model: str, jobs: list[tuple[str, list[np.ndarray | bytes]]]
) -> None:
    """The one place that submits aimass jobs: the fastest path the client offers
    (``Client.submit_many``, pipelined, where it exists; else one ``classify`` each)."""
    if hasattr(client, "submit_many"):
        from aimass.producer.submission import Submission

        client.submit_many(
            Submission.classify(images, model=model, job_id=job_id) for job_id, images in jobs
        )
        return
    for job_id, images in jobs:
        client.classify(images, model=model, job_id=job_id)


def naive_submitter(spec: LoadSpec) -> tuple[Submit, Callable[[], None]]:
    """Submit one task per image with its float32 tensor, the way a first Celery
    producer does: ``task.apply_async(kwargs=...)``."""
    from aimass.bench.naive import app, classify

    tensors = [
        float_tensor_b64(p)
        for p in synthetic_inputs(spec.input_shape, POOL_SIZE, spec.producer_index)
    ]
    counter = itertools.count()

    def submit(job_ids: list[str], images_per_job: int) -> None:
        if images_per_job != 1:
            raise ValueError("the naive worker takes one image per task")
        for job_id in job_ids:
            tensor = tensors[next(counter) % POOL_SIZE]
            classify.apply_async(
                kwargs={"tensor": tensor, "shape": spec.input_shape}, task_id=job_id
            )

    return submit, app.close


class ClosedLoop:
    """Keeps ``concurrency`` jobs in flight and times each from submit to result."""

    def __init__(self, spec: LoadSpec, submit: Submit, commands: queue.Queue[dict[str, Any]]):
        self.spec = spec
        self.submit = submit
        self.commands = commands
        self.redis = redis.Redis.from_url(spec.redis_url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.prefix = f"bench-{spec.system}-{spec.producer_index}-{secrets.token_hex(4)}-"
        self.pubsub.psubscribe(f"{RESULT_KEY_PREFIX}{self.prefix}*")
        self.pubsub.get_message(timeout=5.0)  # the subscription is in place before any job
        self.ids = itertools.count()
        self.inflight: dict[str, float] = {}

    def run(
        self, concurrency: int, images_per_job: int, t0: float, t_end: float, cap: int
    ) -> Window:
        """One window: load until told to stop, then drain and return what was seen."""
        window = Window(concurrency=concurrency, images_per_job=images_per_job, t0=t0)
        stopping = False
        drain_deadline = float("inf")
        last_poll = time.monotonic()
        while not stopping or self.inflight:
            if not stopping:
                self._refill(concurrency, window)
            self._receive(window, t_end, cap)
            now = time.monotonic()
            if not window.t1 and now >= t_end:
                self._close_window(window, t_end)
            if now - last_poll >= POLL_AFTER_S / 2:
                self._poll_late(window, t_end, cap)
                last_poll = now
            if not stopping and self._stop_requested():
                stopping, drain_deadline = True, now + self.spec.drain_timeout_s
            if stopping and now >= drain_deadline:
                break
        if not window.t1:
            self._close_window(window, time.monotonic())
        window.unfinished = len(self.inflight)
        self.inflight.clear()
        return window

    def bulk(self, jobs: int, timeout_s: float) -> Window:
        """``jobs`` one-image jobs sent at once (one call, where the client has one), then
        waited for: the backlog a worker drains. The window runs from the send to the last
        result; what is not answered within ``timeout_s`` is counted unfinished."""
        window = Window(concurrency=jobs, images_per_job=1, t0=time.monotonic())
        ids = [f"{self.prefix}{next(self.ids)}" for _ in range(jobs)]
        self.inflight.update(dict.fromkeys(ids, window.t0))
        self.submit(ids, 1)
        window.submitted = jobs
        deadline, last_poll = window.t0 + timeout_s, window.t0
        while self.inflight and (now := time.monotonic()) < deadline:
            self._receive(window, float("inf"), 0)
            if now - last_poll >= POLL_AFTER_S / 2:
                self._poll_late(window, float("inf"), 0)
                last_poll = now
        window.t1 = time.monotonic()
        window.unfinished = len(self.inflight)
        self.inflight.clear()
        return window

    def _refill(self, concurrency: int, window: Window) -> None:
        missing = concurrency - len(self.inflight)
        if missing <= 0:
            return
        ids = [f"{self.prefix}{next(self.ids)}" for _ in range(missing)]
        now = time.monotonic()
        for job_id in ids:
            self.inflight[job_id] = now
        self.submit(ids, window.images_per_job)
        window.submitted += missing

    def _receive(self, window: Window, t_end: float, cap: int) -> None:
        """Handle every publication waiting now (after waiting a little for the first)."""
        timeout = 0.05
        while (message := next_message(self.pubsub, timeout)) is not None:
            timeout = 0.0
            if message["type"] != "pmessage":
                continue
            job_id = message["channel"].decode()[len(RESULT_KEY_PREFIX) :]
            self._finish(job_id, message["data"], window, t_end, cap, polled=False)

    def _poll_late(self, window: Window, t_end: float, cap: int) -> None:
        now = time.monotonic()
        late = [job_id for job_id, sent in self.inflight.items() if now - sent > POLL_AFTER_S]
        if not late:
            return
        values = self.redis.mget([f"{RESULT_KEY_PREFIX}{job_id}" for job_id in late])
        for job_id, raw in zip(late, values, strict=True):
            if raw is not None:
                self._finish(job_id, raw, window, t_end, cap, polled=True)

    def _finish(
        self, job_id: str, raw: bytes | str, window: Window, t_end: float, cap: int, polled: bool
    ) -> None:
        record = ResultRecord.decode(raw, job_id)
        if record is None or not record.final or job_id not in self.inflight:
            return
        done = time.monotonic()
        sent = self.inflight.pop(job_id)
        if not window.t1 and done >= t_end:
            self._close_window(window, t_end)
        if window.t1 or done < window.t0:
            return
        window.polled += polled
        if record.state is not ResultState.succeeded:
            window.failed += 1
            if len(window.errors) < 3:
                window.errors.append(json.dumps(record.result)[:300])
            return
        window.completed += 1
        window.images += window.images_per_job
        window.latencies_ms.append((done - sent) * 1000.0)
        result = record.result
        timing = result.get("timing") if isinstance(result, dict) else None
        window.batch_sizes[int(timing["batch_size"]) if timing else 1] += 1
        if timing:
            window.worker_queue_ms.append(float(timing["queue_ms"]))
            window.inference_ms.append(float(timing["inference_ms"]))
            if timing.get("bucket") is not None:
                window.bucket_sizes[int(timing["bucket"])] += 1
        if window.completed >= cap > 0:
            self._close_window(window, done)

    def _close_window(self, window: Window, t1: float) -> None:
        window.t1 = t1
        emit({"event": "window", "t1": t1})

    def _stop_requested(self) -> bool:
        try:
            command = self.commands.get_nowait()
        except queue.Empty:
            return False
        return bool(command.get("cmd") == "stop")


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _read_commands(commands: queue.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        if line.strip():
            commands.put(json.loads(line))
    commands.put({"cmd": "exit"})


def main(argv: list[str]) -> int:
    spec = LoadSpec(**json.loads(argv[0]))
    make = aimass_submitter if spec.system == "aimass" else naive_submitter
    submit, close = make(spec)
    commands: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_read_commands, args=(commands,), daemon=True).start()
    loop = ClosedLoop(spec, submit, commands)
    emit({"event": "ready"})
    while (command := commands.get())["cmd"] != "exit":
        if command["cmd"] == "run":
            window = loop.run(
                command["concurrency"],
                command.get("images_per_job", 1),
                command["t0"],
                command["t_end"],
                command.get("cap", 0),
            )
            emit({"event": "result", **window.as_json()})
        elif command["cmd"] == "bulk":
            window = loop.bulk(command["jobs"], command["timeout_s"])
            emit({"event": "result", **window.as_json()})
    close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
