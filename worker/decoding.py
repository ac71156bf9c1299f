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

This thread runs the model and never touches the network, but once per join, when
told to (``on_start``, as ``worker/batcher.py`` does per batch): the start of a
sequence must be on record before its first step could kill the process. Stream
entries and finished streaming sequences go to ``streams`` (worker/streams.py), which
writes them on its own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Protocol

import numpy as np

from aimass.protocol.errors import AimassError, JobCancelled, ModelError
from aimass.worker.batcher import BatchOutput, DeviceLost, Runner
from aimass.worker.buckets import bucket_for
from aimass.worker.sampling import sample_rows
from aimass.worker.sequences import Decoding, SequenceModel
from aimass.worker.sessions import DeviceHealth

log = logging.getLogger(__name__)

DEFAULT_MAX_SEQUENCES = 64


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
        self.buckets = tuple(b for b in buckets if b <= self.max_sequences) or ()
        if self.buckets and self.buckets[-1] < self.max_sequences:
            self.buckets = (*self.buckets, self.max_sequences)
        self.time_limit_s = time_limit_s
        self.cancelled = cancelled
        self.on_start = on_start
        self.streams = streams
        self.on_step = on_step
        self.device = device
        self.on_device_lost = on_device_lost
        self.token_input = spec.token_input
        self.state_inputs = [state.input for state in spec.state]
        self.logits_index = list(output_names).index(spec.logits_output)
        self.state_indices = [list(output_names).index(state.output) for state in spec.state]
        self._inbox: queue.SimpleQueue[Decoding | _Stop] = queue.SimpleQueue()
        self._waiting: Decoding | None = None  # taken from the inbox, not yet joined
        self._stopping = False
        self._stopped = False
        self.active: list[Decoding] = []
        self._tokens = np.zeros((0,), dtype=model.token_dtype)
        self._states = model.zero_states(0)
        self._thread = threading.Thread(target=self._loop, name=f"decoder-{name}", daemon=True)
        self._thread.start()

    # The batcher's face (worker/served.py treats both alike).

    @property
    def max_batch_size(self) -> int:
        return self.max_sequences

    max_delay_s = 0.0

    def submit(
        self, decoding: Decoding, arrived: float, alone: bool = False
    ) -> Future[BatchOutput]:
        """Queue a sequence; its future resolves when it has ended."""
        if self._stopped:
            raise ModelError(f"model {self.name!r} was unloaded; send the job again")
        decoding.arrived = arrived
        decoding.alone = alone
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

    # The loop.

    def _loop(self) -> None:
        while not (self._stopping and not self.active and self._waiting is None):
            self._admit()
            if self.active:
                self._step()

    def _admit(self) -> None:
        """Let waiting sequences join, up to the limit; wait for one when none is in
        flight. A sequence to decode alone joins only an empty step, and nothing joins
        it."""
        if self.active and self.active[0].alone:
            return
        joining: list[Decoding] = []
        while len(self.active) + len(joining) < self.max_sequences:
            item = self._next(block=not self.active and not joining)
            if item is None:
                break
            if item.alone and (self.active or joining):
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
        if decoding.job_id is None or decoding.job_id not in self.cancelled:
            return False
        decoding.fail(JobCancelled(f"job {decoding.job_id} was cancelled"))
        resolve(decoding)
        return True

    def _join(self, joining: list[Decoding]) -> None:
        ids = [d.job_id for d in joining if d.job_id is not None]
        if self.on_start is not None and ids:
            try:
                self.on_start(ids)
            except Exception as exc:
                log.warning("could not record the start of %d sequences: %s", len(ids), exc)
        now = time.monotonic()
        for d in joining:
            d.joined = now
        first = np.array([d.prompt[0] for d in joining], dtype=self._tokens.dtype)
        self._tokens = np.concatenate([self._tokens, first])
        zeros = self.model.zero_states(len(joining))
        self._states = [np.concatenate([s, z]) for s, z in zip(self._states, zeros, strict=True)]
        self.active.extend(joining)
        started = [d for d in joining if d.stream]
        if started:
            self._stream(started, [], [])

    def _step(self) -> None:
        self._drop_stopped()
        if not self.active:
            return
        started = time.monotonic()
        try:
            logits, states = self._run()
        except Exception as exc:
            self._failed(exc)
            return
        self._states = states
        ended = self._advance(logits)
        if self.on_step is not None:
            self.on_step(len(self.active), len(logits), (time.monotonic() - started) * 1000.0)
        self._after_step(ended)

    def _run(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """One step of every sequence in flight; the logits and states of their rows."""
        rows = len(self.active)
        size = bucket_for(rows, self.buckets) if self.buckets else rows
        feeds: dict[str, np.ndarray] = {self.token_input: _padded(self._tokens, size)}
        for name, state in zip(self.state_inputs, self._states, strict=True):
            feeds[name] = _padded(state, size)
        outputs = self.runner(feeds)
        if self.device is not None:
            self.device.succeeded()
        logits = outputs[self.logits_index][:rows]
        return logits, [outputs[i][:rows] for i in self.state_indices]

    def _advance(self, logits: np.ndarray) -> list[int]:
        """Feed on each sequence's prompt or sample its next token; the rows that ended."""
        tokens = self._tokens
        rows: list[int] = []
        sampling: list[Decoding] = []
        for i, d in enumerate(self.active):
            if d.fed < len(d.prompt):
                d.fed += 1
                if d.fed < len(d.prompt):
                    tokens[i] = d.prompt[d.fed]
                    continue
            rows.append(i)
            sampling.append(d)
        ended: list[int] = []
        if rows:
            picked = sample_rows(logits, rows, [d.sampler for d in sampling])
            for i, d, token in zip(rows, sampling, picked, strict=True):
                tokens[i] = token
                if d.accept(token):
                    ended.append(i)
        return ended

    def _after_step(self, ended: list[int]) -> None:
        written: list[tuple[Decoding, str]] = []
        if self.streams is not None:
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
        now = time.monotonic()
        limit = self.time_limit_s
        gone: list[int] = []
        for i, d in enumerate(self.active):
            if d.job_id is not None and d.job_id in self.cancelled:
                d.fail(JobCancelled(f"job {d.job_id} was cancelled"))
                gone.append(i)
            elif limit > 0 and now - d.joined > limit:
                d.fail(
                    ModelError(
                        f"job {d.job_id} decoded {d.tokens} tokens in {limit:g} s and was "
                        "stopped (the worker's AIMASS_JOB_TIME_LIMIT_S bounds a sequence): "
                        "ask for fewer max_tokens"
                    )
                )
                gone.append(i)
        if gone:
            leaving = self._remove(gone)
            if leaving:
                self._stream([], [], leaving)

    def _remove(self, gone: list[int]) -> list[Decoding]:
        """Take the rows of ended sequences out of the step and settle them; returns
        those the stream writer settles (streaming ones that ran a step)."""
        leaving = [self.active[i] for i in gone]
        size = len(self.active)
        out = set(gone)
        keep = [i for i in range(size) if i not in out]
        self._tokens = self._tokens[keep]
        self._states = [state[keep] for state in self._states]
        self.active = [self.active[i] for i in keep]
        return self._leave(leaving, size)

    def _leave(self, leaving: list[Decoding], step_size: int = 1) -> list[Decoding]:
        now = time.monotonic()
        streamed = []
        for d in leaving:
            d.output = BatchOutput(
                outputs=[],
                queue_ms=((d.joined or now) - d.arrived) * 1000.0,
                inference_ms=(now - (d.joined or now)) * 1000.0,
                batch_size=step_size,
                run_size=bucket_for(step_size, self.buckets) if self.buckets else step_size,
            )
            if d.stream and self.streams is not None and d.joined:
                streamed.append(d)  # settled by the stream writer, once its entries are out
            else:
                resolve(d)
        return streamed

    def _failed(self, exc: Exception) -> None:
        """A step failed: every sequence in it fails (or, on a broken device, is left
        for another worker)."""
        leaving = list(range(len(self.active)))
        if self.device is not None and self.device.failed(exc):
            log.critical("a step of %s broke the device (%s)", self.name, exc)
            reason = str(self.device.broken)
            for d in self.active:
                resolve(d, DeviceLost(reason))
            self.active, self._tokens = [], self._tokens[:0]
            self._states = [state[:0] for state in self._states]
            if self.on_device_lost is not None:
                self.on_device_lost(reason)
            return
        error = (
            exc
            if isinstance(exc, AimassError)
            else ModelError(
                f"model {self.name!r} failed on a step of {len(self.active)} sequences: "
                f"{type(exc).__name__}: {exc}"
            )
        )
        log.error("a step of %d sequences failed on %s: %s", len(self.active), self.name, exc)
        for d in self.active:
            d.fail(error)
        self._stream([], [], self._remove(leaving))


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with zero rows added up to ``size`` rows (itself when it has them)."""
    if len(array) == size:
        return array
    out = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out


def resolve(decoding: Decoding, error: BaseException | None = None) -> None:
    """Settle a sequence's future: its error, if it failed, else its output."""
    future = decoding.future
    error = error or decoding.error
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(decoding.output)  # type: ignore[arg-type]
    except InvalidStateError:
        pass
