"""A delivered message, as the bulk consumer holds it: the bytes taken from the queue
(kept as they were for kombu's unacknowledged hash), the delivery tag, and the task
message read from them (``aimass.protocol.messages.TaskMessage``, the type the client
builds), or only the job id of a message that is refused unread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aimass.protocol.messages import TaskMessage


@dataclass(frozen=True)
class Envelope:
    """One delivered message."""

    raw: bytes  # the message exactly as it was in the queue
    delivery_tag: str
    task_id: str | None
    message: TaskMessage | None = None  # None: refused before it was read

    @classmethod
    def open(cls, raw: bytes, delivery_tag: str) -> Envelope:
        """Read the task message (not the job inside it); raises ``InvalidMessage``."""
        message = TaskMessage.decode(raw)
        return cls(raw, delivery_tag, message.task_id, message)

    @classmethod
    def unread(cls, raw: bytes, delivery_tag: str) -> Envelope:
        """A message refused without reading it (too large, or not an envelope): only
        its job id, where one can be found."""
        return cls(raw, delivery_tag, peek_task_id(raw))

    @property
    def task(self) -> str | None:
        return self.message.task if self.message else None

    @property
    def content_type(self) -> str:
        return self.message.content_type if self.message else ""


# headers.id or properties.correlation_id, as JSON text.
_ID_FIELD = re.compile(rb'"(?:id|correlation_id)"\s*:\s*"([^"\\]{1,255})"')
PEEK_BYTES = 64 * 1024


def peek_task_id(raw: bytes) -> str | None:
    """The job id of a message that is not decoded (too large, or damaged), found by
    searching its ends only: kombu writes headers and properties after the body, other
    senders may write them before it. The body in between is never read."""
    tail = list(_ID_FIELD.finditer(raw[-PEEK_BYTES:]))
    found = tail[-1] if tail else _ID_FIELD.search(raw[:PEEK_BYTES])
    return found.group(1).decode("utf-8", errors="replace") if found else None
