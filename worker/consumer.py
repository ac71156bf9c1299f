"""The bulk consumer: takes many jobs from Redis at once, feeds the batchers, and settles
the jobs it has at hand (their results stored, their messages acknowledged) in one call.

Threads: one consumer (Redis IO and decoding) and one finisher (results and acks);
each model's batcher runs ONNX Runtime on its own thread and never touches the network.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from aimass.protocol.contract import TASK_KINDS
from aimass.protocol.errors import (
    AimassError,
    InvalidJob,
    JobCancelled,
    ModelError,
    PayloadTooLarge,
    WorkerLost,
)
from aimass.protocol.keys import QUEUE_PREFIX, dead_letter_key
from aimass.protocol.messages import InvalidMessage
from aimass.protocol.records import ResultRecord
from aimass.worker.batcher import DeviceLost
from aimass.worker.envelope import Envelope
from aimass.worker.handoffs import at_hand
from aimass.worker.redis_queue import ModelQueues, Settlement, Taken
from aimass.worker.retries import Backoff, until_done
from aimass.worker.served import ServedModels
from aimass.worker.served_model import StartedJob

log = logging.getLogger(__name__)


@dataclass(eq=False)
class InFlight:
    """A job taken from Redis and not yet settled."""

    envelope: Envelope
    arrived: float = 0.0  # time.monotonic() when it was taken from Redis
    started: StartedJob | None = None
    record: ResultRecord | None = None  # set when the job ended before reaching a batcher
    dead_letter: str = ""  # where its message is parked: it ran too often

    @property
    def model(self) -> str:
        return self.started.name if self.started else "-"


class Capacity:
    """How many jobs this worker may hold; the consumer waits for room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def wait_for_room(self, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.used < self.limit, timeout)
            return self.limit - self.used

    def resize(self, limit: int) -> None:
        """Hold up to ``limit`` jobs from now on (those held above it are kept)."""
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    def take(self, count: int) -> None:
        with self._cond:
            self.used += count

    def release(self, count: int) -> None:
        with self._cond:
            self.used -= count
            self._cond.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.used == 0, timeout)


class BulkConsumer:
    """Consumes the model queues of one worker process."""

    def __init__(
        self,
        runtime: ServedModels,
        queues: ModelQueues,
        capacity: int,
        revoked: Container[str] = (),
        on_settled: Callable[[InFlight, ResultRecord | None], None] | None = None,
        on_load: Callable[[int], None] | None = None,
        idle_poll_s: float = 0.02,
        max_deliveries: int = 3,
        max_result_bytes: int = 16 * 1024 * 1024,
        cancelled: Container[str] = (),
    ) -> None:
        self.runtime = runtime
        self.queues = queues
        self.max_message_bytes = queues.max_message_bytes
        self.capacity = Capacity(capacity)
        self.revoked = revoked
        self.on_settled = on_settled
        self.on_load = on_load
        self.idle_poll_s = idle_poll_s
        self.max_deliveries = max_deliveries  # 0: no cap
        self.max_result_bytes = max_result_bytes
        self.cancelled = cancelled  # jobs cancelled since this worker started
        self._finished: queue.Queue[InFlight | None] = queue.Queue()
        # Jobs taken from Redis and not yet handed to a batcher, and whether the last
        # take emptied the queues: together they tell the batchers when to stop waiting.
        self._decoding = 0
        self._drained = False
        self._stopping = threading.Event()
        self.ticked = time.monotonic()  # when the consumer loop last came round
        self._consumer = threading.Thread(
            target=self._consume_loop, name="aimass-consumer", daemon=True
        )
        self._finisher = threading.Thread(
            target=self._finish_loop, name="aimass-finisher", daemon=True
        )

    def start(self) -> None:
        self._consumer.start()
        self._finisher.start()

    def stop_taking(self) -> None:
        """Take no more jobs; those in flight go on to be settled (or left, see
        ``_settle``). ``stop`` still ends the threads."""
        self._stopping.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop taking jobs, finish and acknowledge those in flight, then return."""
        self._stopping.set()
        self._consumer.join(timeout)
        if not self.capacity.wait_empty(timeout):
            log.warning(
                "%d jobs still in flight at shutdown; Redis will redeliver them", self.capacity.used
            )
        self._finished.put(None)
        self._finisher.join(timeout)

    # -- taking jobs ---------------------------------------------------------------

    def health(self, stall_s: float) -> dict[str, bool | str]:
        """The liveness of the consumer and finisher threads (worker/gauges.py)."""
        still = time.monotonic() - self.ticked
        consumer: bool | str = True
        if not self._consumer.is_alive():
            consumer = "the consumer thread has died"
        elif still > stall_s:
            consumer = f"the consumer thread has not moved for {still:.0f} s"
        return {
            "consumer": consumer,
            "finisher": self._finisher.is_alive() or "the finisher thread has died",
        }

    def _consume_loop(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            self.ticked = time.monotonic()
            room = self.capacity.wait_for_room(timeout=0.5)
            if room <= 0 or self._stopping.is_set():
                continue
            try:
                # After a take that emptied the queues, another take right away is
                # nearly always empty and costs a round trip (~0.2 ms of this thread on
                # a small VM): wait for a producer's wake-up (or the idle poll) instead.
                taken = [] if self._drained else self.queues.take(room)
                taken = taken or self.queues.wait(self.idle_poll_s, room)
            except redis.RedisError as exc:
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, backoff.pause)
                backoff.wait(self._stopping)
                continue
            except Exception:  # a bug, not a message: this thread must outlive it
                log.exception("taking jobs failed; retrying in %.1f s", backoff.pause)
                backoff.wait(self._stopping)
                continue
            backoff.reset()
            if taken:
                self.capacity.take(len(taken))
                if self.on_load:
                    self.on_load(self.capacity.used)
                arrived = time.monotonic()
                self._decoding = len(taken)
                self._drained = len(taken) < room
                for message in taken:
                    # Counted before the job is handed over: a batcher that receives
                    # the last job of a take that emptied the queues runs it at once,
                    # instead of waiting to be poked after it.
                    self._decoding -= 1
                    self._begin_safely(message, arrived)
            elif self._drained:
                continue  # still idle: the batchers know
            else:
                self._drained = True
            if self._drained:
                self.runtime.poke()  # a partial batch need not wait for more

    def idle(self) -> bool:
        """True when no more jobs are on their way to a batcher: the last take emptied
        the model queues and every job it brought has been (or is being) handed over."""
        return self._drained and self._decoding == 0

    def _begin_safely(self, message: Taken, arrived: float) -> None:
        """Start one message; a bug must cost that message, never the consumer thread
        (which would leave a live worker that takes no more jobs)."""
        try:
            self._begin(message, arrived)
        except Exception as exc:
            log.exception("could not start message %s", message.delivery_tag)
            self._refuse(
                message,
                arrived,
                ModelError(f"the worker could not start this job ({type(exc).__name__}: {exc})"),
            )

    def _begin(self, message: Taken, arrived: float) -> None:
        if not message.delivery_tag:
            log.error("dropped a queue entry that is not a kombu message: %r", message.raw[:200])
            self.capacity.release(1)
            return
        if len(message.raw) > self.max_message_bytes:
            self._refuse(
                message,
                arrived,
                PayloadTooLarge(
                    f"message is {len(message.raw)} bytes; this worker takes messages of up to "
                    f"{self.max_message_bytes} bytes (AIMASS_MAX_MESSAGE_BYTES): send images "
                    "encoded (PNG, JPEG) rather than as float tensors, or split the inputs "
                    "over several jobs"
                ),
            )
            return
        try:
            envelope = Envelope.open(message.raw, message.delivery_tag)
        except InvalidMessage as exc:
            self._refuse(message, arrived, InvalidJob(str(exc)))
            return
        flight = InFlight(envelope, arrived)
        if message.cancelled or envelope.task_id in self.cancelled:
            # Its cancelled record is stored already: nothing to run, only to acknowledge.
            flight.record = ResultRecord.cancelled(str(envelope.task_id))
            self._finished.put(flight)
            return
        if self.max_deliveries and message.runs >= self.max_deliveries:
            self._park(message, envelope, arrived)
            return
        if message.runs and envelope.task_id is not None:
            self.queues.count_at_start(envelope.task_id)  # it runs alone: counted as it starts
        try:
            flight.started = self._start(envelope, arrived, message.runs)
        except AimassError as error:
            flight.record = self._failure(envelope, error)
        except Exception as exc:  # a bug must fail one job, not the worker
            log.exception("job %s failed before batching", envelope.task_id)
            flight.record = self._failure(envelope, ModelError(f"{type(exc).__name__}: {exc}"))
        if flight.started is None:
            self._finished.put(flight)
        else:
            flight.started.future.add_done_callback(self._when_done(flight))

    def _refuse(self, message: Taken, arrived: float, error: AimassError | None) -> None:
        """Acknowledge a message that is not opened; its job fails with ``error`` when its
        id can be found without decoding it."""
        envelope = Envelope.unread(message.raw, message.delivery_tag)
        task_id = envelope.task_id
        flight = InFlight(envelope, arrived)
        if error is not None:
            log.error(
                "refused message %s (job %s): %s", message.delivery_tag, task_id, error.message
            )
            if task_id is not None:
                flight.record = ResultRecord.failure(task_id, error)
        self._finished.put(flight)

    def _park(self, message: Taken, envelope: Envelope, arrived: float) -> None:
        """A job whose worker died each time it ran it: fail it, and keep its message
        in its model's dead-letter list instead of running it again."""
        model = message.queue.removeprefix(QUEUE_PREFIX) or "-"
        dead_letter = dead_letter_key(model)
        error = WorkerLost(
            f"job {envelope.task_id}: its worker died {message.runs} times while it held or"
            f" ran the job, each time before answering (AIMASS_MAX_DELIVERIES="
            f"{self.max_deliveries}): it is parked in {dead_letter} and runs again only if"
            " sent again (aimass dead retry)"
        )
        log.error(
            "parked job %s of %s: its worker died %d times while it held or ran it",
            envelope.task_id,
            model,
            message.runs,
        )
        flight = InFlight(envelope, arrived, dead_letter=dead_letter)
        flight.record = self._failure(envelope, error)
        self._finished.put(flight)

    def _when_done(self, flight: InFlight) -> Callable[[Any], None]:
        return lambda _future: self._finished.put(flight)

    def _start(self, envelope: Envelope, arrived: float, taken_runs: int = 0) -> StartedJob | None:
        message = envelope.message
        assert message is not None  # opened
        if envelope.task_id is None:
            raise InvalidJob("message has no task id (headers.id); it cannot get a result")
        if envelope.task_id in self.revoked:
            raise _Revoked("revoked")
        if message.is_expired(datetime.now(UTC)):
            raise _Revoked("expired")
        if envelope.task is None:
            raise InvalidJob(
                "message has no 'task' header: aimass takes Celery protocol 2 messages "
                "(headers lang, task, id); protocol 1, with the task in the body, is not "
                "accepted"
            )
        kind = TASK_KINDS.get(envelope.task)
        if kind is None:
            raise InvalidJob(
                f"unknown task {envelope.task!r}; this queue serves {', '.join(TASK_KINDS)}"
            )
        if message.headers.get("eta") or message.headers.get("countdown"):
            raise InvalidJob("aimass jobs cannot be delayed (eta/countdown); send them when due")
        # A job its worker died in before runs alone: its batch mates are not at risk.
        return self.runtime.begin(
            kind, message.kwargs(), arrived, envelope.task_id, alone=taken_runs > 0
        )

    def _failure(self, envelope: Envelope, error: AimassError) -> ResultRecord | None:
        if envelope.task_id is None:
            log.error("refused message %s: %s", envelope.delivery_tag, error.message)
            return None
        if isinstance(error, _Revoked):
            return ResultRecord.revoked(envelope.task_id, error.message)
        if "pickle" in envelope.content_type or "python-serialize" in envelope.content_type:
            log.error(
                "refused job %s: untrusted content type %s (pickle is never accepted)",
                envelope.task_id,
                envelope.content_type,
            )
        return ResultRecord.failure(envelope.task_id, error)

    # -- settling jobs: their results stored and their messages acknowledged --------

    def _finish_loop(self) -> None:
        # The jobs at hand, settled together (not a batch).
        while (finished := at_hand(self._finished, 512)) is not None:
            self._settle(finished)

    def _settle(self, finished: list[InFlight]) -> None:
        left = [flight for flight in finished if _device_lost(flight)]
        if left:
            # Neither stored nor acknowledged: Redis hands them to another worker, as
            # it would had this process died (it is about to exit: worker/service.py).
            finished = [flight for flight in finished if flight not in left]
            self.capacity.release(len(left))
            log.warning(
                "left %d jobs unacknowledged for another worker: this process's device is broken",
                len(left),
            )
        if not finished:
            return
        settlements = [self._settlement(flight) for flight in finished]
        until_done(lambda: self.queues.settle(settlements), log, f"store {len(finished)} results")
        for flight, settlement in zip(finished, settlements, strict=True):
            if self.on_settled:
                self.on_settled(flight, settlement.record)
        self.capacity.release(len(finished))
        if self.on_load:
            self.on_load(self.capacity.used)

    def _settlement(self, flight: InFlight) -> Settlement:
        envelope = flight.envelope
        record = flight.record
        if flight.started is not None and envelope.task_id is not None:
            record = self._result_record(envelope.task_id, flight.started)
        return Settlement(
            envelope.delivery_tag, envelope.task_id, record, flight.dead_letter, envelope.raw
        )

    def _result_record(self, task_id: str, started: StartedJob) -> ResultRecord:
        try:
            record = ResultRecord.success(task_id, self.runtime.complete(started))
            if len(record.encoded) > self.max_result_bytes:
                raise PayloadTooLarge(
                    f"the result of job {task_id} is {len(record.encoded)} bytes; workers "
                    f"store results of up to {self.max_result_bytes} bytes "
                    "(AIMASS_MAX_RESULT_BYTES): ask for fewer images per job, for PNG "
                    "rather than tensors, or for a smaller top_k"
                )
            return record
        except JobCancelled:
            return ResultRecord.cancelled(task_id)  # dropped from its batch
        except AimassError as error:
            return ResultRecord.failure(task_id, error)
        except Exception as exc:
            log.exception("job %s failed after its batch", task_id)
            return ResultRecord.failure(task_id, ModelError(f"{type(exc).__name__}: {exc}"))


def _device_lost(flight: InFlight) -> bool:
    started = flight.started
    return (
        started is not None
        and started.future.done()
        and isinstance(started.future.exception(), DeviceLost)
    )


class _Revoked(AimassError):
    """Internal: the job was revoked or expired; stored as Celery's REVOKED state."""
