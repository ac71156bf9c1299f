"""The producer client: submit jobs, then poll or wait for their results.

>>> client = Client("redis://localhost:6379/0")
>>> job = client.classify("seven.png", model="digits")
>>> job.result(timeout=10)["predictions"][0][0]["label"]
'7'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

from aimass.producer.bulk import BulkRun, submit_in_chunks
from aimass.producer.enqueue import Enqueuer
from aimass.producer.job import Job, as_completed, wait
from aimass.producer.results import JobStatus
from aimass.producer.submission import Deadline, Submission
from aimass.protocol.codecs import InputLike
from aimass.protocol.connections import connect
from aimass.protocol.contract import Priority
from aimass.protocol.keys import PRIORITY_SEPARATOR, PRIORITY_STEPS
from aimass.protocol.queues import queue_depth
from aimass.protocol.settings import DEFAULT_MAX_QUEUE_DEPTH, DEFAULT_REDIS_URL, ClientSettings
from aimass.protocol.shards import keyspace
from aimass.protocol.tensors import TensorInputs

__all__ = ["Client", "Job", "JobStatus", "as_completed", "producer_config", "wait"]


class Client:
    """Submits jobs to the workers through Redis and reads their results.

    ``max_queue_depth`` bounds each model's queue (all priorities): a submit that would
    pass it raises ``QueueFull`` instead of enqueueing (0: no bound). It is a soft bound,
    checked by the producers that use this client (atomically with the push), not by
    Redis: senders that push without checking are not held back.
    """

    def __init__(
        self,
        url: str = DEFAULT_REDIS_URL,
        *,
        max_queue_depth: int = DEFAULT_MAX_QUEUE_DEPTH,
        result_ttl_s: int | None = None,
        queue_shards: int = 0,
    ) -> None:
        self.settings = ClientSettings.for_url(url, max_queue_depth, result_ttl_s, queue_shards)
        self.redis = connect(url)
        self._enqueuer = Enqueuer(
            self.redis,
            self.settings.max_queue_depth,
            self.settings.result_ttl_s,
            keyspace(self.redis, queue_shards),  # sharded names on a cluster
        )

    @classmethod
    def from_env(cls) -> Client:
        """A client configured by ``REDIS_URL``, ``AIMASS_MAX_QUEUE_DEPTH`` and
        ``AIMASS_RESULT_TTL_S``."""
        return cls.from_settings(ClientSettings.from_env())

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> Client:
        return cls(
            settings.redis_url,
            max_queue_depth=settings.max_queue_depth,
            result_ttl_s=settings.result_ttl_s,
            queue_shards=settings.queue_shards,
        )

    @property
    def url(self) -> str:
        return self.settings.redis_url

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Submitting one job.

    def classify(
        self,
        inputs: InputLike | Sequence[InputLike],
        *,
        model: str,
        version: int | None = None,
        top_k: int = 5,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
    ) -> Job:
        """Classify images: file paths, bytes, PIL images or numpy arrays, one or many
        (one job; its result has one list of predictions per image)."""
        return self.submit(
            Submission.classify(
                inputs,
                model=model,
                version=version,
                top_k=top_k,
                job_id=job_id,
                priority=priority,
                deadline=deadline,
            )
        )

    def generate(
        self,
        *,
        model: str,
        count: int = 1,
        labels: Sequence[int] | None = None,
        seed: int | None = None,
        format: str = "png",
        version: int | None = None,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
        conditions: Sequence[Sequence[float]] | None = None,
    ) -> Job:
        """Ask a generator for ``count`` images, of the classes in ``labels`` if given (a
        class-conditioned generator), or for ``conditions``, one vector per image (a
        generator conditioned on a vector); an unconditional one takes neither. The
        result's ``images`` are PIL images (``png``) or numpy arrays (``tensor``)."""
        return self.submit(
            Submission.generate(
                model=model,
                count=count,
                labels=labels,
                seed=seed,
                format=format,
                version=version,
                job_id=job_id,
                priority=priority,
                deadline=deadline,
                conditions=conditions,
            )
        )

    def infer(
        self,
        model: str,
        inputs: TensorInputs,
        *,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        version: int | None = None,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
    ) -> Job:
        """Run a model on named tensors: ``{name: array}`` (numpy arrays, or lists), or
        the Open Inference Protocol's input dicts. Any model answers, whatever its kind.
        ``outputs`` picks some outputs (default: all). The result's ``outputs`` are in
        the protocol's form (raw bytes unless ``binary=False``: JSON lists), and its
        ``arrays`` the same as numpy arrays, by name."""
        return self.submit(
            Submission.infer(
                inputs,
                model=model,
                outputs=outputs,
                binary=binary,
                parameters=parameters,
                request_id=request_id,
                version=version,
                job_id=job_id,
                priority=priority,
                deadline=deadline,
            )
        )

    def sequence(self, prompt: str, *, model: str, **options: Any) -> Job:
        """Ask a sequence model for the text that follows ``prompt``; ``options`` are
        ``Submission.sequence``'s (max_tokens, temperature, top_k, top_p, seed, stop,
        stream, ...). Read it whole with ``job.result()``, or as it is made with
        ``job.stream()`` when sent with ``stream=True``."""
        return self.submit(Submission.sequence(prompt, model=model, **options))

    def submit(self, submission: Submission) -> Job:
        """Enqueue one job. A job id submitted twice runs once: the second submit returns
        the same job without enqueueing. Raises ``QueueFull`` when the model's queue is
        at its bound, ``InvalidJob`` (at build time) for kwargs the contract refuses."""
        self._enqueuer.push_all([submission])
        return self.job(submission.job_id)

    # Many jobs.

    def submit_many(self, submissions: Iterable[Submission]) -> list[Job]:
        """Enqueue many jobs in few round trips, in order, and return them. When a
        model's queue reaches its bound, raises ``BulkQueueFull`` (a ``QueueFull``)
        whose ``job_ids`` are the jobs enqueued before it (a prefix of the input)."""
        return [self.job(job_id) for job_id in submit_in_chunks(self._enqueuer, submissions)]

    def run_many(
        self,
        submissions: Iterable[Submission],
        *,
        max_in_flight: int = 256,
        progress: bool | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
        total: int | None = None,
    ) -> list[Any]:
        """Submit jobs with at most ``max_in_flight`` unfinished at a time and return
        their results in input order. A full queue makes it wait, not fail. Shows a
        progress bar on stderr (``progress=None``: when stderr is a terminal). Raises
        the first failed job's error unless ``return_exceptions``."""
        run = BulkRun(
            self.redis,
            self._enqueuer,
            max_in_flight=max_in_flight,
            progress=progress,
            timeout=timeout,
            return_exceptions=return_exceptions,
        )
        return run.run(submissions, total)

    def map(
        self,
        inputs: Iterable[InputLike],
        *,
        model: str,
        version: int | None = None,
        top_k: int = 5,
        priority: int = Priority.low,
        deadline: Deadline | None = None,
        max_in_flight: int = 256,
        progress: bool | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Classify many images, one job each (the workers batch them), with bounded
        jobs in flight; returns each image's job result in input order (its
        ``predictions[0]`` are that image's top-k). Images are read and encoded only as
        they are submitted, so ``inputs`` may be a long generator."""
        submissions = (
            Submission.classify(
                item,
                model=model,
                version=version,
                top_k=top_k,
                priority=priority,
                deadline=deadline,
            )
            for item in inputs
        )
        return self.run_many(
            submissions,
            max_in_flight=max_in_flight,
            progress=progress,
            timeout=timeout,
            return_exceptions=return_exceptions,
            total=len(inputs) if isinstance(inputs, Sized) else None,
        )

    # Reading results.

    def job(self, job_id: str) -> Job:
        """Re-attach to a job by its id, from any process."""
        return Job(self.redis, job_id, self.settings.result_ttl_s)

    def wait(
        self, jobs: Sequence[Job], timeout: float | None = None, *, return_exceptions: bool = False
    ) -> list[Any]:
        """Results of many jobs in their order (see ``aimass.producer.job.wait``)."""
        return wait(jobs, timeout, return_exceptions=return_exceptions)

    def as_completed(self, jobs: Sequence[Job], timeout: float | None = None) -> Iterator[Job]:
        """Jobs as they finish (see ``aimass.producer.job.as_completed``)."""
        return as_completed(jobs, timeout)

    def queue_depth(self, model: str) -> int:
        """Jobs waiting in a model's queue, all priorities."""
        return queue_depth(self.redis, model)


def producer_config(url: str) -> dict[str, Any]:
    """Celery settings for a Celery app that sends aimass jobs itself (the client does
    not need Celery); they must agree with the workers' on serialization and on the
    priority queues' names."""
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
