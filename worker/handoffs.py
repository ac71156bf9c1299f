"""How the worker's threads hand work to each other: what a queue holds, taken at once;
a job's future settled once; the start of jobs put on record before they run, on the
calling thread or (``Starts``, for a decoding loop) on a thread of its own. The
batchers, the decoding loops, the consumer's finisher and the stream writer share
these."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def at_hand(
    items: queue.Queue[T | None] | queue.SimpleQueue[T | None], limit: int
) -> list[T] | None:
    """What a queue holds now: wait for its first item, then take the rest without
    waiting, up to ``limit`` (the items at hand, handled together: not a batch). ``None``
    when a ``None``, put there to stop, comes first; one that comes after items is left
    for the next call."""
    first = items.get()
    if first is None:
        return None
    taken = [first]
    while len(taken) < limit:
        try:
            item = items.get_nowait()
        except queue.Empty:
            break
        if item is None:
            items.put(None)
            break
        taken.append(item)
    return taken


def record_start(on_start: Callable[[list[str]], None], ids: list[str], what: str) -> None:
    """Tell ``on_start`` that these jobs start (``what``: them, for the log). Best effort:
    a failure to tell is logged, and the jobs run."""
    if not ids:
        return
    try:
        on_start(ids)
    except Exception as exc:
        log.warning("could not record the start of %s: %s", what, exc)


def resolve_future(
    future: Future[T], result: T | None = None, error: BaseException | None = None
) -> None:
    """Resolve a job's future, unless it is resolved already (the time limit resolves
    a batch's futures while its run goes on)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


class Starts:
    """Puts the start of sequences on record (``on_start``) from a thread of its own:
    every sequence asked for since its last command goes in the next one."""

    def __init__(self, name: str, on_start: Callable[[list[str]], None]) -> None:
        self.on_start = on_start
        self._asked: queue.SimpleQueue[tuple[list[str], Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"starts-{name}", daemon=True)
        self._thread.start()

    def count(self, ids: list[str]) -> Future[None]:
        """Count a run of each of these jobs; the future resolves once it is on record
        (or could not be put there, which is logged: a job runs all the same)."""
        counted: Future[None] = Future()
        self._asked.put((ids, counted))
        return counted

    def record(self, ids: list[str]) -> None:
        """Count a run of each of these jobs on the calling thread."""
        record_start(self.on_start, ids, f"{len(ids)} sequences")

    def stop(self) -> None:
        self._asked.put(None)

    def _loop(self) -> None:
        while (asked := at_hand(self._asked, 1 << 30)) is not None:
            self.record([i for ids, _ in asked for i in ids])
            for _, counted in asked:
                counted.set_result(None)
