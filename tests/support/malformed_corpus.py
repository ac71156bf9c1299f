"""The malformed-input corpus: raw kombu envelopes of bad jobs (and good ones among
them), each with the outcome it must get. Used by tests/integration/test_malformed.py;
its pieces are in malformed_parts.py, its cases in malformed_envelopes.py and
malformed_jobs.py."""

from __future__ import annotations

from aimass.protocol.codecs import encode_image
from tests.support.malformed_envelopes import envelope_cases
from tests.support.malformed_jobs import classify_cases, generate_cases
from tests.support.malformed_parts import Case, Corpus, b64, classify
from tests.support.tiny_models import row_image


def good_jobs(c: Corpus, count: int) -> None:
    for i in range(count):
        c.job(
            f"good {i}", classify(inputs=[{"image": b64(encode_image(row_image(i % 8)))}], top_k=1)
        )


def build_corpus() -> list[Case]:
    corpus = Corpus()
    good_jobs(corpus, 10)
    envelope_cases(corpus)
    good_jobs(corpus, 10)
    classify_cases(corpus)
    good_jobs(corpus, 10)
    generate_cases(corpus)
    good_jobs(corpus, 10)
    return corpus.cases
