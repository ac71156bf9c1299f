"""What a sequence model does with a job: the prompt as token ids in, the text it
writes out. The decoding loop itself is ``worker/decoding.py``; no queue here.

A job becomes a ``Decoding``: its prompt's token ids, its sampler, its stop strings and
limits, and (as the loop goes) the text written. The loop feeds the prompt one token a
step, then each sampled token, and ends it at its end token, a stop string or its
sequence has ended.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aimass.protocol.contract import FinishReason, SequenceJob
from aimass.protocol.errors import AimassError, InvalidInput, InvalidJob
from aimass.protocol.manifest import Manifest, ModelKind, SequenceSpec
from aimass.protocol.tokens import Tokenizer
from aimass.worker.batcher import BatchOutput
from aimass.worker.kinds import Limits, seed_for
from aimass.worker.runs import Feeds
from aimass.worker.sampling import Sampler
from aimass.worker.stops import StopText


@dataclass(eq=False)
class Decoding:
    """One job's sequence as the decoding loop carries it from step to step.

    The loop keeps the sampled token ids (``ids``) and decides the common endings (end
    token, ``max_tokens``) for all its sequences at once; only a sequence that streams
    or has stop strings turns each token into text as it goes (``write``). The others'
    text is made once, at the end."""

    job_id: str | None
    prompt: list[int]  # token ids fed one a step before any is sampled
    sampler: Sampler
    max_tokens: int  # tokens to write at most (the model's max_length included)
    stop: StopText
    stream: bool
    end_token: int
    vocabulary: list[str]
    arrived: float = 0.0  # time.monotonic() when the job reached the worker
    alone: bool = False  # decodes with no batch mates (a worker died decoding it before)
    future: Future[BatchOutput] = field(default_factory=Future)
    ids: list[int] = field(default_factory=list)  # sampled, the end token's included
    pieces: list[str] = field(default_factory=list)  # the text let out (``write``)
    chunk: str = ""  # text let out in this step, for the stream
    finish_reason: FinishReason | None = None
    error: AimassError | None = None
    joined: float = 0.0  # when its first step ran
    first_token_at: float = 0.0
    output: BatchOutput | None = None  # set when it leaves the loop
    muted: bool = False  # its stream had ended before this run: it writes nothing there
    counted: Future[None] | None = None  # its run's count, once sent (worker/decoding.py)

    @property
    def tokens(self) -> int:
        """Tokens written (sampled), the end token's and the stop string's included."""
        return len(self.ids)

    @property
    def writes(self) -> bool:
        """Its text is made token by token (it streams, or has stop strings)."""
        return self.stream or bool(self.stop.stops)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    @property
    def text(self) -> str:
        if self.writes:
            return "".join(self.pieces)
        vocabulary, end = self.vocabulary, self.end_token
        return "".join(vocabulary[token] for token in self.ids if token != end)

    def write(self, token: int) -> None:
        """Let out the text of a sampled token (not the end token), holding back what
        may start a stop string; a stop string ends the sequence."""
        out = self.stop.add(self.vocabulary[token])
        if out:
            self.pieces.append(out)
            if self.stream:
                self.chunk += out
        if self.stop.stopped:
            self.finish_reason = FinishReason.stop

    def finish(self, reason: FinishReason) -> None:
        """End the sequence (unless a stop string ended it already), letting out the
        text held back for stop strings."""
        if self.finish_reason is not None:
            return
        held = self.stop.flush()
        if held:
            self.pieces.append(held)
            if self.stream:
                self.chunk += held
        self.finish_reason = reason

    def fail(self, error: AimassError) -> None:
        self.error = error


class SequenceModel:
    """Turns ``aimass.sequence`` jobs into ``Decoding`` records and their results."""

    kind = ModelKind.sequence

    def __init__(self, manifest: Manifest) -> None:
        if manifest.sequence is None:
            raise InvalidJob(f"manifest of {manifest.name!r} has no 'sequence' section")
        self.manifest = manifest
        self.spec: SequenceSpec = manifest.sequence
        self.vocabulary = list(self.spec.vocabulary)
        self.tokenizer = Tokenizer(self.spec)
        self.state_dtypes = [np.dtype(state.dtype) for state in self.spec.state]
        specs = {spec.name: spec for spec in manifest.inputs}
        token = specs.get(self.spec.token_input)
        self.token_dtype = np.dtype(token.dtype if token else "int64")

    def prepare(
        self, job: SequenceJob, limits: Limits, job_id: str | None = None
    ) -> tuple[Feeds, int, Decoding]:
        prompt = self.tokenize(job.prompt)
        if self.spec.start_token is not None:
            prompt.insert(0, self.spec.start_token)
        if not prompt:
            raise InvalidInput(
                f"the prompt is empty and model {self.manifest.name!r} has no start token "
                "to begin from: send a prompt of at least one character"
            )
        max_tokens = job.max_tokens
        if self.spec.max_length is not None:
            room = self.spec.max_length - len(prompt)
            if room < 1:
                raise InvalidInput(
                    f"the prompt is {len(prompt)} tokens; model {self.manifest.name!r} "
                    f"decodes at most {self.spec.max_length} tokens, prompt included: "
                    "send a shorter prompt"
                )
            max_tokens = min(max_tokens, room)
        seed = job.seed if job.seed is not None else seed_for(job_id)
        decoding = Decoding(
            job_id=job_id,
            prompt=prompt,
            sampler=Sampler(job.temperature, job.top_k, job.top_p, seed),
            max_tokens=max_tokens,
            stop=StopText(job.stop),
            stream=job.stream,
            end_token=-1 if self.spec.end_token is None else self.spec.end_token,
            vocabulary=self.vocabulary,
        )
        return {}, 1, decoding

    def tokenize(self, text: str) -> list[int]:
        """The token ids of ``text``, longest match first; a character the vocabulary
        lacks becomes the unknown token, or fails the job."""
        ids, unknown = self.tokenizer.encode(text)
        if unknown:
            shown = "".join(sorted(set(unknown)))[:40]
            raise InvalidInput(
                f"the prompt holds {len(unknown)} characters that model "
                f"{self.manifest.name!r} has no token for ({shown!r}) and it has no unknown "
                f"token: send text made of its {len(self.tokenizer.ids)} known tokens"
            )
        return ids

    def finish(self, job: SequenceJob, context: Decoding, output: BatchOutput) -> dict[str, Any]:
        first = context.first_token_at or time.monotonic()
        return {
            "text": context.text,
            "tokens": context.tokens,
            "finish_reason": str(context.finish_reason),
            "seed": context.sampler.seed,
            "prompt_tokens": len(context.prompt),
            "time_to_first_token_ms": round((first - context.arrived) * 1000.0, 3),
        }

    def zero_states(self, rows: int) -> list[np.ndarray]:
        """A new sequence's state (zeros), for ``rows`` sequences."""
        return [
            np.zeros((rows, *state.shape), dtype=dtype)
            for state, dtype in zip(self.spec.state, self.state_dtypes, strict=True)
        ]

    def warmup_feeds(self, batch_size: int) -> Feeds:
        feeds = {self.spec.token_input: np.zeros((batch_size,), dtype=self.token_dtype)}
        for state, array in zip(self.spec.state, self.zero_states(batch_size), strict=True):
            feeds[state.input] = array
        return feeds
