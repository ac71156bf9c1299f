"""A prompt as a sequence model's token ids: the one tokenizer that the worker
(worker/sequences.py) and the export's checks of a model (export/sequence_quality.py)
share, so that a prompt is encoded at export as it will be served.

Longest match first, over the vocabulary's texts; the special tokens (start, end,
unknown) are never matched by text, even where the vocabulary gives them one, since a
prompt's characters are text to be written, not commands. A character no entry matches
becomes the unknown token, where the model has one.
"""

from __future__ import annotations

from aimass.protocol.manifest import SequenceSpec


class Tokenizer:
    """A sequence model's prompt encoder."""

    def __init__(self, spec: SequenceSpec) -> None:
        special = {spec.start_token, spec.end_token, spec.unknown_token}
        self.ids = {
            text: index
            for index, text in enumerate(spec.vocabulary)
            if index not in special and text
        }
        self.longest = max((len(text) for text in self.ids), default=1)
        self.unknown_token = spec.unknown_token

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """The token ids of ``text``, and the characters in it that no entry matches
        and no unknown token stands for (left out of the ids: the caller refuses
        them)."""
        ids: list[int] = []
        missing: list[str] = []
        at = 0
        while at < len(text):
            for size in range(min(self.longest, len(text) - at), 0, -1):
                token = self.ids.get(text[at : at + size])
                if token is not None:
                    ids.append(token)
                    at += size
                    break
            else:
                if self.unknown_token is None:
                    missing.append(text[at])
                else:
                    ids.append(self.unknown_token)
                at += 1
        return ids, missing
