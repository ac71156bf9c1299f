"""Stop strings: the text a sequence writes is let out only once it cannot be the start
of a stop string, so that a stop string split across tokens never reaches the caller,
in its result or its stream."""

from __future__ import annotations

from collections.abc import Sequence


class StopText:
    """A sequence's text, piece by piece. ``add`` returns the text that is now safe to
    let out; ``stopped`` is set once a stop string has appeared (it and what follows are
    dropped)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        # Every prefix of every stop string: the tail that must be held back.
        self._prefixes = {stop[:i] for stop in self.stops for i in range(1, len(stop))}
        self._longest = max((len(stop) for stop in self.stops), default=0)
        self._held = ""
        self.stopped = False

    def add(self, piece: str) -> str:
        """Take the next piece of text; return what may be let out now."""
        if not self.stops:
            return piece
        text = self._held + piece
        cut = min((i for i in (text.find(stop) for stop in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._held_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The text held back, let out when the sequence ends for another reason."""
        held, self._held = self._held, ""
        return held

    def _held_tail(self, text: str) -> int:
        """The length of the longest tail of ``text`` that starts a stop string."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            if text[-size:] in self._prefixes:
                return size
        return 0
