"""The one prompt tokenizer (protocol/tokens.py): the worker and the export encode a
prompt alike, special tokens with text included."""

from __future__ import annotations

import pytest

from aimass.export.sequence_quality import encode_prompt
from aimass.protocol.manifest import SequenceSpec
from aimass.protocol.tokens import Tokenizer

pytestmark = pytest.mark.unit


def test_sequence_prompts_encode_alike_at_export_and_in_the_worker() -> None:
    # "#" is the end token's text and "?" the unknown token's: neither is matched as text.
    spec = SequenceSpec(
        vocabulary=["?", "a", "ab", "b", "#"], state=[], end_token=4, unknown_token=0
    )
    assert Tokenizer(spec).encode("aab#?c") == ([1, 2, 0, 0, 0], [])
    assert encode_prompt("aab#?c", spec) == [1, 2, 0, 0, 0]


def test_sequence_prompt_characters_without_a_token_are_named() -> None:
    spec = SequenceSpec(vocabulary=["a", "b", "#"], state=[], end_token=2)
    assert Tokenizer(spec).encode("a#b#") == ([0, 1], ["#", "#"])
    with pytest.raises(ValueError, match="'#' is not in the vocabulary"):
        encode_prompt("a#", spec)
