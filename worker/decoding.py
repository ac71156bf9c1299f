"""The decoding loop of a sequence model: one thread, one run per step, every sequence
in flight in it (continuous, or iteration-level, batching, as vLLM and TGI do).

Each step feeds each sequence's next token (its prompt's, one a step, then the token it
sampled last) and its state, as one batch; a sequence that ends (end token, stop
string, ``max_tokens``, the model's ``max_length``, its time limit, a cancel) leaves
after the step it ended in, and a waiting one joins at the next step, up to
``max_sequences`` in flight. ``batching=False`` decodes one sequence at a time: the
naive way, kept for the benchmark to compare with.

The rows of a step are the sequences in flight, in the order they joined; their state
arrays are kept in that order, so a step with no joins and no leaves copies nothing.
With ``buckets`` (on a GPU) each run is padded up to the smallest bucket that holds
its rows, so that the session sees only the shapes it was built for.

This thread runs the model and touches the network only when nothing else is in
flight. The start of a sequence must be on record before its first step could kill
the process (``on_start``, as ``worker/batcher.py`` does per batch). While others are
in flight, a thread of its own (``Starts``, worker/handoffs.py) counts the runs of all
the sequences that came since its last command in one command, and the others go on
stepping meanwhile; a sequence begins its prompt once its count has answered. One that
arrives while the loop steps others and has room is counted as it arrives, so that the
count overlaps its wait for the step in progress; one that must wait for room, when it
joins; one that finds the loop idle, by the loop itself, with no thread between.
Stream entries and finished streaming sequences go to ``streams`` (worker/streams.py),
which writes them on its own thread.

Between two steps the loop looks for sequences to join, start, feed or drop; while
there can be none (nothing arrived, no cancel heard, no look at the time limits due) it
steps again without looking, which at one sequence in flight is most of its steps.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future
from typing import Protocol

import numpy as np

from aimass.protocol.errors import AimassError, JobCancelled, ModelError
from aimass.worker.batcher import BatchOutput, DeviceLost
from aimass.worker.buckets import bucket_for, gather
from aimass.worker.handoffs import Starts, resolve_future
from aimass.worker.runs import Runner
from aimass.worker.sequences import Decoding, SequenceModel
from aimass.worker.sessions import DeviceHealth
from aimass.worker.steps import Prefill, StepRows

log = logging.getLogger(__name__)

DEFAULT_MAX_SEQUENCES = 64
# Steps of new sequences' prompts between two steps of those decoding: enough for most
# prompts to be fed at once, few enough that a long one does not stall the others.
PROMPT_STEPS = 32
# Steps between two looks at the sequences' time limits (each look costs an array
# operation; a limit is seconds, a step well under a millisecond).
LIMIT_EVERY = 32


class StreamSink(Protocol):
    """Where a step's stream entries go (worker/streams.py)."""

    def step(
        self,
        started: list[Decoding],
        written: list[tuple[Decoding, str]],
        ended: list[Decoding],
    ) -> None:
        """``started``: streaming sequences at their first step; ``written``: the text
        each let out in this step; ``ended``: streaming sequences that ended, whose
        futures the sink resolves once their entries are written."""
        ...


class _Stop:
    """Put on the inbox to end the thread once no sequence is in flight."""


class Decoder:
    """One sequence model's decoding loop on its own thread."""

    def __init__(
        self,
        name: str,
        runner: Runner,
        model: SequenceModel,
        output_names: Sequence[str],
        max_sequences: int = DEFAULT_MAX_SEQUENCES,
        batching: bool = True,
        buckets: Sequence[int] = (),
        time_limit_s: float = 0.0,
        cancelled: Container[str] = (),
        on_start: Callable[[list[str]], None] | None = None,
        streams: StreamSink | None = None,
        on_step: Callable[[int, int, float], None] | None = None,
        device: DeviceHealth | None = None,
        on_device_lost: Callable[[str], None] | None = None,
    ) -> None:
        spec = model.spec
        self.name = name
        self.runner = runner
        self.model = model
        self.max_sequences = max(1, max_sequences if batching else 1)
        # Sessions exist for the buckets only: no step may outgrow the largest.
        self.buckets = tuple(buckets)
        if self.buckets:
            self.max_sequences = min(self.max_sequences, self.buckets[-1])
        self.time_limit_s = time_limit_s
        self.cancelled = cancelled
        self.streams = streams
        self.on_step = on_step
        self.device = device
        self.on_device_lost = on_device_lost
        # A step's inputs, in the order _run feeds them: the token, then each state.
        self.feed_names = [spec.token_input, *(state.input for state in spec.state)]
        self.logits_index = list(output_names).index(spec.logits_output)
        self.state_indices = [list(output_names).index(state.output) for state in spec.state]
        self._inbox: queue.SimpleQueue[Decoding | _Stop] = queue.SimpleQueue()
        self._waiting: Decoding | None = None  # taken from the inbox, not yet joined
        # Joined, their start being put on record, in the order they joined.
        self._counting: deque[Decoding] = deque()
        self._starts = Starts(name, on_start) if on_start is not None else None
        self._stopping = False
        self._stopped = False
        self.rows = StepRows(model.zero_states(0), model.token_dtype)
        self.prefill = Prefill(model.zero_states(0), model.token_dtype)
        self._cancels_seen = -1  # how many cancels had been heard at the last look
        self._steps = 0
        self._thread = threading.Thread(target=self._loop, name=f"decoder-{name}", daemon=True)
        self._thread.start()

    def submit(
        self, decoding: Decoding, arrived: float, alone: bool = False
    ) -> Future[BatchOutput]:
        """Queue a sequence; its future resolves when it has ended."""
        if self._stopped:
            raise ModelError(f"model {self.name!r} was unloaded; send the job again")
        decoding.arrived = arrived
        decoding.alone = alone
        starts = self._starts
        if starts is not None and decoding.job_id is not None and not alone:
            # Room in a loop that is stepping others (read from this thread: at worst a
            # step out of date). An idle loop counts it itself, with no thread between.
            busy = self.in_flight()
            room = self.max_sequences - busy
            if busy and self._waiting is None and room > self._inbox.qsize():
                decoding.counted = starts.count([decoding.job_id])
        self._inbox.put(decoding)
        return decoding.future

    def alive(self) -> bool:
        return self._thread.is_alive()

    def poke(self) -> None:
        """Nothing waits for more jobs here: each step runs with what is in flight."""

    def stop(self, timeout: float | None = None) -> None:
        """Decode what is in flight and queued, then end the thread."""
        self._stopped = True
        self._inbox.put(_Stop())
        self._thread.join(timeout)
        if self._starts is not None and not self._thread.is_alive():
            self._starts.stop()  # (a loop still decoding may need it yet)

    # The loop.

    def _loop(self) -> None:
        while not (self._stopping and not self.in_flight() and self._waiting is None):
            self._admit()
            self._started()
            self._drop_stopped()
            if self.prefill.feeding:
                self._feed_prompts()
            if self.active:
                self._step()
                self._steps_while_quiet()

    def in_flight(self) -> int:
        """Sequences taken into the loop: their start being recorded, feeding their
        prompts, or in the steps."""
        return len(self.rows.active) + len(self.prefill.feeding) + len(self._counting)

    def _admit(self) -> None:
        """Let waiting sequences join, up to the limit; wait for one when none is in
        flight. A sequence to decode alone joins only an empty loop, and nothing joins
        it."""
        if self._waiting is None and self._inbox.empty() and self.in_flight():
            return  # the common case, each step: nothing to join
        first = self._counting or self.prefill.feeding or self.active
        if first and first[0].alone:
            return
        joining: list[Decoding] = []
        while self.in_flight() + len(joining) < self.max_sequences:
            item = self._next(block=not self.in_flight() and not joining)
            if item is None:
                break
            if item.alone and (self.in_flight() or joining):
                self._waiting = item  # after the sequences in flight have left
                break
            joining.append(item)
            if item.alone:
                break
        if joining:
            self._join(joining)

    def _next(self, block: bool) -> Decoding | None:
        if self._waiting is not None:
            item, self._waiting = self._waiting, None
            return item
        while True:
            if not block and self._inbox.empty():
                return None  # no call into the queue, which may switch threads
            try:
                got = self._inbox.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                if self._stopping or not block:
                    return None
                continue
            if isinstance(got, _Stop):
                self._stopping = True
                return None
            if self._cancelled(got):
                continue
            return got

    def _cancelled(self, decoding: Decoding) -> bool:
        """Drop a sequence cancelled before it joined."""
        if not self._cancelled_rows([decoding]):
            return False
        resolve(decoding)
        return True

    def _join(self, joining: list[Decoding]) -> None:
        if self._starts is None:
            self._begin(joining)
            return
        ids = [d.job_id for d in joining if d.counted is None and d.job_id is not None]
        if ids and self.in_flight():
            counted = self._starts.count(ids)  # the others go on stepping meanwhile
            for d in joining:
                d.counted = d.counted or counted
        elif ids:
            self._starts.record(ids)  # nothing else to run: no thread to hand it to
        self._counting.extend(joining)

    def _started(self) -> None:
        """The sequences whose start is on record begin their prompts, in the order they
        joined; when no other sequence is in flight, wait for the first to be."""
        begin: list[Decoding] = []
        while self._counting:
            counted = self._counting[0].counted
            if counted is not None and not counted.done():
                if self.rows or self.prefill or begin:
                    break
                counted.result()
            begin.append(self._counting.popleft())
        if begin:
            self._begin(begin)

    def _begin(self, joining: list[Decoding]) -> None:
        self.prefill.add(joining, self.model.zero_states(len(joining)), time.monotonic())
        started = [d for d in joining if d.stream]
        if started:
            self._stream(started, [], [])

    @property
    def active(self) -> list[Decoding]:
        """The sequences in flight, one per row of a step."""
        return self.rows.active

    def _feed_prompts(self) -> None:
        """Feed the new sequences' prompts, in steps of their own, for up to
        ``PROMPT_STEPS`` steps (a long prompt must not stall the others' decoding); those
        fed sample their first tokens and join the rows. Sequences that arrive meanwhile
        join the feeding at once, rather than after the next step of all."""
        for _ in range(PROMPT_STEPS):
            try:
                logits, states = self._run(self.prefill.tokens(), self.prefill.states)
            except Exception as exc:
                self._failed(exc, self.prefill)
                return
            done, their_states, their_logits = self.prefill.fed_step(logits, states)
            if done:
                first = len(self.rows)
                self.rows.join(done, their_states, time.monotonic())
                self._after_step(self.rows.advance(their_logits, range(first, len(self.rows))))
            if not self.prefill:
                return
            self._admit()
            self._started()

    def _step(self) -> None:
        started = time.monotonic() if self.on_step is not None else 0.0
        try:
            logits, states = self._run(self.rows.tokens, self.rows.states)
        except Exception as exc:
            self._failed(exc, self.rows)
            return
        self.rows.states = states
        ended = self.rows.advance(logits)
        if self.on_step is not None:
            self.on_step(len(self.active), len(logits), (time.monotonic() - started) * 1000.0)
        self._after_step(ended)

    def _steps_while_quiet(self) -> None:
        """More steps of the rows, for as long as the loop would find nothing to do
        between them: no sequence waits to join, none is being counted or fed, no cancel
        was heard, no look at the time limits is due. The loop's looks cost ~1 µs a
        step; a step of one sequence on the CPU, ~60 (the rest of the loop's own cost is
        the step's bookkeeping and the sampling, which ONNX Runtime alone pays too)."""
        if self._waiting is not None or self._counting or self.prefill.feeding:
            return  # (only the loop changes these: they hold while it steps here)
        heard = self._cancels_heard()
        if heard is None or heard != self._cancels_seen:
            return
        inbox, rows = self._inbox, self.rows
        due = LIMIT_EVERY if self.time_limit_s > 0 else 1 << 62
        while (
            rows.active
            and inbox.empty()
            and self._cancels_heard() == heard
            and (self._steps + 1) % due
        ):
            self._steps += 1
            self._step()

    def _run(
        self, tokens: np.ndarray, states: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One step of these rows (padded up to a bucket); their logits and states."""
        rows = len(tokens)
        feeds = dict(zip(self.feed_names, [tokens, *states], strict=True))
        size = self._run_size(rows)
        if size == rows:
            outputs = self.runner(feeds)
        else:  # padded: the padding's rows are cut from the outputs
            outputs = [out[:rows] for out in self.runner(gather([feeds], 0, rows, size))]
        if self.device is not None:
            self.device.succeeded()
        return outputs[self.logits_index], [outputs[i] for i in self.state_indices]

    def _run_size(self, rows: int) -> int:
        """The rows a step of ``rows`` runs with: its bucket's, on a GPU."""
        return bucket_for(rows, self.buckets) if self.buckets else rows

    def _after_step(self, ended: list[int]) -> None:
        written: list[tuple[Decoding, str]] = []
        if self.streams is not None and self.rows.writing:
            for d in self.active:
                if d.chunk:
                    written.append((d, d.chunk))
                    d.chunk = ""
        leaving = self._remove(ended) if ended else []
        if written or leaving:
            self._stream([], written, leaving)

    def _stream(
        self, started: list[Decoding], written: list[tuple[Decoding, str]], ended: list[Decoding]
    ) -> None:
        if self.streams is not None:
            self.streams.step(started, written, ended)

    def _drop_stopped(self) -> None:
        """Sequences cancelled, or past their time limit, leave before the step."""
        gone: list[int] = []
        if self._new_cancels():
            gone = self._cancelled_rows(self.active)
            feeding = self._cancelled_rows(self.prefill.feeding)
            if feeding:
                self._stream([], [], self._leave(self.prefill.remove(feeding)[0]))
        limit = self.time_limit_s
        self._steps += 1
        if limit > 0 and self._steps % LIMIT_EVERY == 0:
            late = np.flatnonzero(time.monotonic() - self.rows.joined > limit).tolist()
            for i in late:
                d = self.active[i]
                d.fail(
                    ModelError(
                        f"job {d.job_id} decoded {d.tokens} tokens in {limit:g} s and was "
                        "stopped (the worker's AIMASS_JOB_TIME_LIMIT_S bounds a sequence): "
                        "ask for fewer max_tokens"
                    )
                )
            gone = sorted(set(gone) | set(late))
        if gone:
            leaving = self._remove(gone)
            if leaving:
                self._stream([], [], leaving)

    def _cancelled_rows(self, decodings: list[Decoding]) -> list[int]:
        """The rows of the sequences that producers cancelled, failed with JobCancelled."""
        gone = []
        for i, d in enumerate(decodings):
            if d.job_id is not None and d.job_id in self.cancelled:
                d.fail(JobCancelled(f"job {d.job_id} was cancelled"))
                gone.append(i)
        return gone

    def _new_cancels(self) -> bool:
        """Whether producers may have cancelled a sequence since the last look: a
        container that counts the cancels it has heard (``heard``, as
        worker/cancels.py's does) is looked through only when it has heard more."""
        heard = self._cancels_heard()
        if heard is None:
            return True
        if heard == self._cancels_seen:
            return False
        self._cancels_seen = heard
        return True

    def _cancels_heard(self) -> int | None:
        """How many cancels the cancelled ids have heard; None when they do not count."""
        heard: int | None = getattr(self.cancelled, "heard", None)
        return heard

    def _remove(self, gone: list[int]) -> list[Decoding]:
        """Take the rows of ended sequences out of the step and settle them; returns
        those the stream writer settles (streaming ones that ran a step)."""
        size = len(self.active)
        return self._leave(self.rows.remove(gone), size)

    def _leave(self, leaving: list[Decoding], step_size: int = 1) -> list[Decoding]:
        now = time.monotonic()
        streamed = []
        for d in leaving:
            d.output = BatchOutput(
                outputs=[],
                queue_ms=((d.joined or now) - d.arrived) * 1000.0,
                inference_ms=(now - (d.joined or now)) * 1000.0,
                batch_size=step_size,
                run_size=self._run_size(step_size),
            )
            if d.stream and self.streams is not None and d.joined:
                streamed.append(d)  # settled by the stream writer, once its entries are out
            else:
                resolve(d)
        return streamed

    def _failed(self, exc: Exception, group: StepRows | Prefill) -> None:
        """A step failed: every sequence in it fails (or, on a broken device, is left
        for another worker)."""
        size = len(group)
        everyone = list(range(size))
        failed = (
            self.rows.remove(everyone) if group is self.rows else self.prefill.remove(everyone)[0]
        )
        if self.device is not None and self.device.failed(exc):
            log.critical("a step of %s broke the device (%s)", self.name, exc)
            reason = str(self.device.broken)
            for d in failed:
                resolve(d, DeviceLost(reason))
            if self.on_device_lost is not None:
                self.on_device_lost(reason)
            return
        error = (
            exc
            if isinstance(exc, AimassError)
            else ModelError(
                f"model {self.name!r} failed on a step of {size} sequences: "
                f"{type(exc).__name__}: {exc}"
            )
        )
        log.error("a step of %d sequences failed on %s: %s", size, self.name, exc)
        for d in failed:
            d.fail(error)
        self._stream([], [], self._leave(failed, size))


def resolve(decoding: Decoding, error: BaseException | None = None) -> None:
    """Settle a sequence's future: its error, if it failed, else its output."""
    resolve_future(decoding.future, decoding.output, error or decoding.error)
