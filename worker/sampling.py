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

import numpy as np


@dataclass(eq=False)
class Sampler:
    """How one sequence picks its tokens. ``temperature`` 0: the likeliest token."""

    temperature: float = 1.0
    top_k: int = 0  # 0: every token
    top_p: float = 1.0
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def plain(self) -> bool:
        """Sampled from the whole softmax: no cut by top-k or top-p."""
        return not self.greedy and self.top_k == 0 and self.top_p >= 1.0


def sample_rows(logits: np.ndarray, rows: list[int], samplers: list[Sampler]) -> list[int]:
    """The next token of each of ``rows`` of ``logits`` ([batch, vocabulary]), picked by
    the sampler of the same position in ``samplers``."""
    if len(rows) == 1:  # one sequence in the step: no grouping to pay for
        return [sample_one(logits[rows[0]], samplers[0])]
    out = [0] * len(rows)
    greedy = [i for i, s in enumerate(samplers) if s.greedy]
    plain = [i for i, s in enumerate(samplers) if s.plain]
    if greedy:
        picked = np.argmax(logits[[rows[i] for i in greedy]], axis=1).tolist()
        for i, token in zip(greedy, picked, strict=True):
            out[i] = token
    if plain:
        temperatures = np.array([samplers[i].temperature for i in plain], dtype=np.float64)
        draws = np.array([samplers[i].rng.random() for i in plain], dtype=np.float64)
        picked = _draw(logits[[rows[i] for i in plain]], temperatures, draws).tolist()
        for i, token in zip(plain, picked, strict=True):
            out[i] = token
    for i, sampler in enumerate(samplers):
        if not sampler.greedy and not sampler.plain:
            out[i] = sample_one(logits[rows[i]], sampler)
    return out


def sample_one(row: np.ndarray, sampler: Sampler) -> int:
    """The next token from one row of logits."""
    if sampler.greedy:
        return int(np.argmax(row))
    draw = sampler.rng.random()
    if sampler.plain:
        return int(_draw(row[None], np.array([sampler.temperature]), np.array([draw]))[0])
    return _draw_cut(row, sampler, draw)


def _draw(logits: np.ndarray, temperatures: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws, one per row, from softmax(logits / temperature) in float64."""
    scaled = logits.astype(np.float64) / temperatures[:, None]
    scaled -= scaled.max(axis=1, keepdims=True)
    cdf = np.cumsum(np.exp(scaled), axis=1)
    targets = draws * cdf[:, -1]
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
