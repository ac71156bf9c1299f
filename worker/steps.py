"""The rows of a decoding step: the sequences in flight, in the order they joined, with
what each step needs of them kept as arrays (next token, state, tokens written,
limits), so that a step's bookkeeping is a few array operations rather than a loop of
Python per sequence. A step with no joins and no leaves copies nothing.

A new sequence first feeds its whole prompt in steps of its own with the other new ones
(``Prefill``): a step of a few rows is cheaper than a step of all those in flight, and
the logits of its prompt's last token give its first token there, so that it comes as
soon as the prompt is fed (vLLM likewise runs prefills before decoding steps, and
samples a sequence's first token from its prefill). It then joins the rows with that
token as its next input.
"""

from __future__ import annotations

import time

import numpy as np

from aimass.protocol.contract import FinishReason
from aimass.worker.sampling import Sampler, sample_one, sample_rows
from aimass.worker.sequences import Decoding


class StepRows:
    """The sequences in flight and their per-row arrays."""

    def __init__(self, states: list[np.ndarray], token_dtype: np.dtype) -> None:
        self.active: list[Decoding] = []
        self.tokens = np.zeros((0,), dtype=token_dtype)  # each row's next input token
        self.states = states  # each state tensor, a row per sequence
        self.written = np.zeros((0,), dtype=np.int64)
        self.limit = np.zeros((0,), dtype=np.int64)  # max_tokens
        self.joined = np.zeros((0,), dtype=np.float64)
        self.samplers: list[Sampler] = []
        self.writes = np.zeros((0,), dtype=bool)  # rows whose text is made token by token
        self.writing = 0  # how many

    def __len__(self) -> int:
        return len(self.active)

    def join(self, joining: list[Decoding], states: list[np.ndarray], now: float) -> None:
        """Add rows for sequences whose prompts are fed, with the states that feeding
        left them in; ``advance`` then samples their first tokens."""
        for d in joining:
            d.joined = d.joined or now
        self.active.extend(joining)
        self.samplers.extend(d.sampler for d in joining)
        self.tokens = _more(self.tokens, [d.prompt[-1] for d in joining])
        self.states = [np.concatenate([s, z]) for s, z in zip(self.states, states, strict=True)]
        self.written = _more(self.written, [0] * len(joining))
        self.limit = _more(self.limit, [d.max_tokens for d in joining])
        self.joined = _more(self.joined, [now] * len(joining))
        self.writes = _more(self.writes, [d.writes for d in joining])
        self.writing += sum(d.writes for d in joining)

    def remove(self, gone: list[int]) -> list[Decoding]:
        """Take these rows out; returns their sequences."""
        leaving = [self.active[i] for i in gone]
        self.writing -= sum(d.writes for d in leaving)
        out = set(gone)
        keep = [i for i in range(len(self.active)) if i not in out]
        self.active = [self.active[i] for i in keep]
        self.samplers = [self.samplers[i] for i in keep]
        self.tokens = self.tokens[keep]
        self.states = [state[keep] for state in self.states]
        self.written = self.written[keep]
        self.limit, self.joined, self.writes = (
            self.limit[keep],
            self.joined[keep],
            self.writes[keep],
        )
        return leaving

    def advance(self, logits: np.ndarray, rows: range | None = None) -> list[int]:
        """After a step of ``rows`` (all by default): sample each one's next token from
        ``logits`` (a row each) and feed it to the next step; returns the rows that
        ended."""
        at = range(len(self.active)) if rows is None else rows
        if len(at) == 1:  # one sequence: array operations cost more than they save
            i = at[0]
            return self._sampled_one(i, sample_one(logits[0], self.samplers[i]))
        part = slice(at.start, at.stop)
        picked = sample_rows(logits, self.samplers[part])
        self.tokens[part] = picked
        self.written[part] += 1
        written = self.written[part]
        tokens = picked.tolist()
        active = self.active
        for i, token in zip(at, tokens, strict=True):
            active[i].ids.append(token)
        for j in np.flatnonzero(written == 1).tolist():
            active[at[j]].first_token_at = time.monotonic()
        end = active[at[0]].end_token
        ending = (picked == end) | (written >= self.limit[part])
        for j in np.flatnonzero(self.writes[part]).tolist():
            if tokens[j] != end:
                active[at[j]].write(tokens[j])
                ending[j] |= active[at[j]].finish_reason is not None
        ended = np.flatnonzero(ending).tolist()
        for j in ended:
            reason = FinishReason.end if tokens[j] == end else FinishReason.length
            active[at[j]].finish(reason)
        return [at[j] for j in ended]

    def _sampled_one(self, i: int, token: int) -> list[int]:
        """``advance`` for one row."""
        d = self.active[i]
        self.tokens[i] = token
        self.written[i] += 1
        d.ids.append(token)
        if len(d.ids) == 1:
            d.first_token_at = time.monotonic()
        if token == d.end_token:
            d.finish(FinishReason.end)
            return [i]
        if d.writes:
            d.write(token)
        if d.finish_reason is None and len(d.ids) < d.max_tokens:
            return []
        d.finish(FinishReason.length)  # unless a stop string ended it
        return [i]


class Prefill:
    """New sequences feeding their prompts in steps of their own; ``fed_step`` returns
    those whose prompts are fed, with their states and their last step's logits, to
    join the rows."""

    def __init__(self, states: list[np.ndarray], token_dtype: np.dtype) -> None:
        self.feeding: list[Decoding] = []
        self.states = states
        self.fed = np.zeros((0,), dtype=np.int64)  # prompt tokens fed
        self.token_dtype = token_dtype

    def __len__(self) -> int:
        return len(self.feeding)

    def add(self, decodings: list[Decoding], zeros: list[np.ndarray], now: float) -> None:
        for d in decodings:
            d.joined = now
        self.feeding.extend(decodings)
        self.states = [np.concatenate([s, z]) for s, z in zip(self.states, zeros, strict=True)]
        self.fed = _more(self.fed, [0] * len(decodings))

    def tokens(self) -> np.ndarray:
        """The next prompt token of each sequence feeding."""
        fed = self.fed.tolist()
        return np.array(
            [d.prompt[i] for d, i in zip(self.feeding, fed, strict=True)], self.token_dtype
        )

    def fed_step(
        self, logits: np.ndarray, states: list[np.ndarray]
    ) -> tuple[list[Decoding], list[np.ndarray], np.ndarray]:
        """A step of them all has run and left these logits and states: the sequences
        whose prompts are now fed, with their states and logits."""
        self.states = states
        self.fed += 1
        done = [i for i, d in enumerate(self.feeding) if self.fed[i] >= len(d.prompt)]
        leaving, their_states = self.remove(done)
        return leaving, their_states, logits[done]

    def remove(self, gone: list[int]) -> tuple[list[Decoding], list[np.ndarray]]:
        """Take these sequences out; returns them with their states."""
        if not gone:
            return [], []
        out = set(gone)
        keep = [i for i in range(len(self.feeding)) if i not in out]
        leaving = [self.feeding[i] for i in gone]
        their_states = [state[gone] for state in self.states]
        self.feeding = [self.feeding[i] for i in keep]
        self.states = [state[keep] for state in self.states]
        self.fed = self.fed[keep]
        return leaving, their_states


def _more(array: np.ndarray, values: list[object]) -> np.ndarray:
    return np.concatenate([array, np.array(values, dtype=array.dtype)])
