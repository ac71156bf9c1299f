"""A sequence model's quality, measured on the exported step graph as a worker runs it:
its held-out loss, and a sample it writes.

* held-out loss: the mean cross-entropy of each next token (nats per token; per
  character for a character-level model), the held-out text cut into contiguous streams
  decoded side by side, each from zero states, every state carried from step to step;
  perplexity is its exponential.
* a sample: the prompt fed a token a step after the start token, then tokens drawn from
  the softmax of the logits divided by a temperature, with a seeded generator, until the
  end token or a length limit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aimass.export.sessions import cpu_session
from aimass.protocol.manifest import SequenceSpec
from aimass.protocol.tokens import Tokenizer

State = dict[str, NDArray[np.generic]]


class StepRunner:
    """An ONNX Runtime session of a step graph, run one step at a time."""

    def __init__(self, model: bytes | Path, spec: SequenceSpec) -> None:
        self.spec = spec
        self.session = cpu_session(model)
        self.outputs = [spec.logits_output, *(s.output for s in spec.state)]

    def zero_state(self, batch: int) -> State:
        return {s.input: np.zeros((batch, *s.shape), dtype=s.dtype) for s in self.spec.state}

    def step(self, tokens: NDArray[np.int64], state: State) -> tuple[NDArray[np.float32], State]:
        """Next-token logits (batch, vocabulary), and the state for the next step."""
        logits, *new = self.session.run(
            self.outputs, {self.spec.token_input: tokens.astype(np.int64), **state}
        )
        return logits, {s.input: value for s, value in zip(self.spec.state, new, strict=True)}


def held_out_loss(
    model: bytes | Path,
    spec: SequenceSpec,
    tokens: NDArray[np.integer],
    streams: int,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Mean next-token cross-entropy over ``tokens``, cut into ``streams`` contiguous runs
    (up to ``max_steps`` tokens predicted in each)."""
    stride = (len(tokens) - 1) // streams  # each stream starts where the one before ends
    length = stride if max_steps is None else min(stride, max_steps)
    if length < 1:
        raise ValueError(f"{len(tokens)} held-out tokens cannot fill {streams} streams")
    positions = (np.arange(streams) * stride)[:, None] + np.arange(length + 1)
    runs = np.asarray(tokens)[positions].astype(np.int64)  # (streams, length + 1)
    runner = StepRunner(model, spec)
    state = runner.zero_state(streams)
    total = 0.0
    for step in range(length):
        logits, state = runner.step(runs[:, step], state)
        total += float(_log_softmax(logits)[np.arange(streams), runs[:, step + 1]].sum())
    loss = -total / (streams * length)
    return {
        "held_out_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_token": loss / math.log(2),
        "held_out_tokens": streams * length,
        "streams": streams,
    }


def write_sample(
    model: bytes | Path,
    spec: SequenceSpec,
    prompt: str,
    max_tokens: int,
    temperature: float,
    seed: int,
) -> str:
    """The text the model writes after ``prompt`` (the prompt itself left out)."""
    runner = StepRunner(model, spec)
    rng = np.random.default_rng(seed)
    fed = encode_prompt(prompt, spec)
    if spec.start_token is not None:
        fed = [spec.start_token, *fed]
    state = runner.zero_state(1)
    logits = np.zeros((1, len(spec.vocabulary)), np.float32)
    for token in fed:
        logits, state = runner.step(np.array([token]), state)
    written: list[int] = []
    while len(written) < max_tokens:
        token = _draw(logits[0], temperature, rng)
        if token == spec.end_token:
            break
        written.append(token)
        logits, state = runner.step(np.array([token]), state)
    return "".join(spec.vocabulary[token] for token in written)


def encode_prompt(prompt: str, spec: SequenceSpec) -> list[int]:
    """Token ids of ``prompt``, as the worker encodes it (protocol/tokens.py)."""
    tokens, missing = Tokenizer(spec).encode(prompt)
    if missing:
        raise ValueError(
            f"the prompt's {missing[0]!r} is not in the vocabulary, which has no unknown token"
        )
    return tokens


def _draw(logits: NDArray[np.float32], temperature: float, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(np.argmax(logits))
    probabilities = np.exp(_log_softmax(logits.astype(np.float64) / temperature))
    drawn = np.searchsorted(np.cumsum(probabilities), rng.random() * probabilities.sum())
    return int(min(drawn, len(probabilities) - 1))


def _log_softmax(logits: NDArray[np.floating]) -> NDArray[np.float64]:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
