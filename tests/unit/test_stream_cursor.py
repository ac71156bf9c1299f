"""The part of reading a job's text stream that does no IO (producer/streams.py): what
the sync and asyncio iterators hand out, and how a stream ends."""

from __future__ import annotations

import pytest

from aimass.producer.streams import StreamCursor, StreamRestarted
from aimass.protocol.errors import InvalidInput, JobCancelled
from aimass.protocol.records import ResultRecord
from aimass.protocol.streams import StreamEntry, StreamEvent


def reply(cursor: StreamCursor, *entries: StreamEntry) -> None:
    """An XREAD reply holding these entries, read by the cursor."""
    numbered = [(f"1-{i}".encode(), entry.fields()) for i, entry in enumerate(entries)]
    cursor.take([(cursor.key.encode(), numbered)])


def handed_out(cursor: StreamCursor) -> list[object]:
    items = []
    while (item := cursor.next_item()) is not None:
        items.append(str(item) if isinstance(item, StreamRestarted) else item)
    return items


def test_pieces_and_a_restart_are_handed_out_in_order_and_the_end_ends_it() -> None:
    cursor = StreamCursor("job-1")
    reply(
        cursor,
        StreamEntry(StreamEvent.text, text="ab"),
        StreamEntry(StreamEvent.restart, run=2),
        StreamEntry(StreamEvent.text, text="c"),
        StreamEntry(StreamEvent.end, finish_reason="length", tokens=1),
        StreamEntry(StreamEvent.text, text="after the end"),
    )
    assert cursor.last_id == "1-4"
    assert handed_out(cursor) == ["ab", "job job-1 started again from its beginning (run 2)", "c"]
    assert cursor.text == "c"
    assert cursor.end() is False and cursor.done


def test_a_quiet_stream_ends_with_the_text_the_result_holds_beyond_what_was_read() -> None:
    cursor = StreamCursor("job-2")
    reply(cursor, StreamEntry(StreamEvent.text, text="def "))
    handed_out(cursor)
    cursor.settle_from(None)  # not stored yet: read on
    assert not cursor.done and cursor.next_item() is None
    cursor.settle_from(ResultRecord.success("job-2", {"text": "def f():"}))
    assert handed_out(cursor) == ["f():"] and cursor.done


def test_a_result_that_does_not_carry_on_the_text_read_restarts_it() -> None:
    cursor = StreamCursor("job-3")
    reply(cursor, StreamEntry(StreamEvent.text, text="old"))
    handed_out(cursor)
    cursor.settle_from(ResultRecord.success("job-3", {"text": "new text"}))
    assert handed_out(cursor) == ["job job-3 started again from its beginning (run 0)", "new text"]


def test_an_error_entry_raises_the_record_s_error_or_else_its_own() -> None:
    cursor = StreamCursor("job-4")
    reply(cursor, StreamEntry(StreamEvent.error, error="InvalidInput", message="no token for"))
    assert cursor.end() is True and cursor.done
    with pytest.raises(InvalidInput, match="no token for"):
        cursor.fail(None)  # the record could not be read: the entry's error
    with pytest.raises(JobCancelled):
        cursor.fail(ResultRecord.cancelled("job-4"))
