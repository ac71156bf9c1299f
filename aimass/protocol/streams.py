"""The entries of a sequence job's stream (``keys.stream_key``): one Redis stream per job,
appended to by the worker as the text is made, read by producers with XREAD from the
last entry they saw. Each entry's fields are plain text (docs/enqueue.md):

- ``event=text``, ``text``: the next piece of the text (append it to what came before).
- ``event=restart``, ``run``: the job began again from its start on another worker (the
  one that ran it before died); the text read so far is void, and the entries after
  this one give the whole text again. ``run`` counts the job's runs, 2 for the first
  restart.
- ``event=end``, ``finish_reason`` (``end``, ``stop``, ``length``), ``tokens``: the text
  is complete; the job's result holds it whole.
- ``event=error``, ``error`` (the typed error's name), ``message``: the job failed or
  was cancelled; no more text comes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class StreamEvent(StrEnum):
    text = "text"  # a piece of text, to append
    restart = "restart"  # a new run starts the text again from empty
    end = "end"  # the text is complete
    error = "error"  # the job failed or was cancelled


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a job's stream, as the worker writes it and producers read it."""

    event: StreamEvent
    text: str = ""  # text
    run: int = 0  # restart
    finish_reason: str = ""  # end
    tokens: int = 0  # end
    error: str = ""  # error: the typed error's name (InvalidInput, JobCancelled, ...)
    message: str = ""  # error

    def fields(self) -> dict[str, str | int]:
        """The entry's fields for XADD: the event and the fields it carries."""
        if self.event is StreamEvent.text:
            return {"event": self.event, "text": self.text}
        if self.event is StreamEvent.restart:
            return {"event": self.event, "run": self.run}
        if self.event is StreamEvent.end:
            return {"event": self.event, "finish_reason": self.finish_reason, "tokens": self.tokens}
        return {"event": self.event, "error": self.error, "message": self.message}

    @classmethod
    def decode(cls, fields: Mapping[bytes | str, bytes | str]) -> StreamEntry:
        """An entry as XREAD returns its fields; an unknown event reads as an error, so
        that a reader never waits on an entry it cannot understand."""
        text = {_str(k): _str(v) for k, v in fields.items()}
        try:
            event = StreamEvent(text.get("event", ""))
        except ValueError:
            return cls(StreamEvent.error, error="ModelError", message=f"unknown entry {text}")
        return cls(
            event,
            text=text.get("text", ""),
            run=int(text.get("run", 0) or 0),
            finish_reason=text.get("finish_reason", ""),
            tokens=int(text.get("tokens", 0) or 0),
            error=text.get("error", ""),
            message=text.get("message", ""),
        )


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
