"""Choosing each sequence's next token from its logits: greedy, or sampled with the
sequence's own generator after temperature, top-k and top-p.

Reproducible whatever shares a step: each sequence draws from a generator of its own,
exactly one number per token it samples, so its batch mates never move its draws; and
the probabilities are worked out in float64 from the float32 logits, so that the tiny
differences ONNX Runtime's kernels make between batch sizes (last bits of a float32)
would have to land within ~1e-7 of a boundary of the cumulative distribution to change
a token. The rows that need nothing but a softmax (no top-k, no top-p) are done as one
array operation for the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

DRAWS_AHEAD = 64  # numbers a sequence's generator draws per call


class Mode(StrEnum):
    """How a sampler picks a token."""

    greedy = "greedy"  # the likeliest (temperature 0)
    plain = "plain"  # a draw from the whole softmax: rows of a step share one operation
    cut = "cut"  # a draw among the top-k, then the top-p, likeliest tokens


@dataclass(eq=False)
class Sampler:
    """How one sequence picks its tokens. ``temperature`` 0: the likeliest token."""

    temperature: float = 1.0
    top_k: int = 0  # 0: every token
    top_p: float = 1.0
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)
    mode: Mode = field(init=False)
    _ahead: list[float] = field(init=False, default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        if self.temperature == 0:
            self.mode = Mode.greedy
        elif self.top_k == 0 and self.top_p >= 1.0:
            self.mode = Mode.plain
        else:
            self.mode = Mode.cut

    def draw(self) -> float:
        """The next number of the sequence's generator, in [0, 1). Drawn ``DRAWS_AHEAD``
        at a time (one call instead of one per token, ~0.3 µs each): the numbers are
        the same, in the same order, as one at a time."""
        if not self._ahead:
            self._ahead = self.rng.random(DRAWS_AHEAD).tolist()[::-1]
        return self._ahead.pop()


def sample_rows(logits: np.ndarray, samplers: list[Sampler]) -> np.ndarray:
    """The next token of each row of ``logits`` ([rows, vocabulary]), picked by the
    sampler of the same row."""
    modes = [s.mode for s in samplers]
    if modes.count(Mode.plain) == len(modes):  # the common case: one draw per row, at once
        return _draw(logits, [s.temperature for s in samplers], [s.draw() for s in samplers])
    out = np.empty(len(samplers), dtype=np.int64)
    greedy = [i for i, mode in enumerate(modes) if mode == Mode.greedy]
    plain = [i for i, mode in enumerate(modes) if mode == Mode.plain]
    if greedy:
        out[greedy] = np.argmax(logits[greedy], axis=1)
    if plain:
        temperatures = [samplers[i].temperature for i in plain]
        out[plain] = _draw(logits[plain], temperatures, [samplers[i].draw() for i in plain])
    for i, mode in enumerate(modes):
        if mode == Mode.cut:
            out[i] = _draw_cut(logits[i], samplers[i], samplers[i].draw())
    return out


def sample_one(row: np.ndarray, sampler: Sampler) -> int:
    """The next token from one row of logits."""
    if sampler.mode == Mode.greedy:
        return int(np.argmax(row))
    draw = sampler.draw()
    if sampler.mode == Mode.plain:
        scaled = row.astype(np.float64)
        if sampler.temperature != 1.0:
            scaled /= sampler.temperature
        scaled -= scaled.max()
        cdf = np.cumsum(np.exp(scaled, out=scaled), out=scaled)
        return min(int(np.searchsorted(cdf, draw * cdf[-1], side="right")), len(cdf) - 1)
    return _draw_cut(row, sampler, draw)


def _draw(logits: np.ndarray, temperatures: list[float], draws: list[float]) -> np.ndarray:
    """Inverse-CDF draws, one per row, from softmax(logits / temperature) in float64:
    the same sums, in the same order, as ``sample_one`` makes for one row."""
    scaled = logits.astype(np.float64)
    if any(t != 1.0 for t in temperatures):
        scaled /= np.array(temperatures)[:, None]
    scaled -= scaled.max(axis=1, keepdims=True)
    cdf = np.cumsum(np.exp(scaled, out=scaled), axis=1, out=scaled)
    targets = np.array(draws) * cdf[:, -1]
    picked = (cdf <= targets[:, None]).sum(axis=1)
    return np.minimum(picked, logits.shape[1] - 1)  # a draw of exactly the total


def _draw_cut(row: np.ndarray, sampler: Sampler, draw: float) -> int:
    """A draw among the ``top_k`` likeliest tokens, then the fewest of them whose
    probability reaches ``top_p``. Ties in the order go to the lower token id."""
    scaled = row.astype(np.float64) / sampler.temperature
    order = np.argsort(-scaled, kind="stable")
    if 0 < sampler.top_k < len(order):
        order = order[: sampler.top_k]
    kept = scaled[order]
    probs = np.exp(kept - kept[0])
    probs /= probs.sum()
    if sampler.top_p < 1.0:
        cum = np.cumsum(probs)
        # The smallest prefix whose probability reaches top_p (at least one token).
        count = int(np.searchsorted(cum, sampler.top_p, side="left")) + 1
        probs = probs[: min(count, len(probs))]
    cdf = np.cumsum(probs)
    index = int((cdf <= draw * cdf[-1]).sum())
    return int(order[min(index, len(probs) - 1)])
