"""Word error rate between what was said and what was heard, for the benchmark and the tests.

Both sides are lower-cased and stripped of punctuation first (Whisper's "Hello, there!" and
the script's "hello there" are the same words); jiwer does the alignment.
"""

from __future__ import annotations

import re

import jiwer

_NOT_WORD = re.compile(r"[^a-z0-9' ]")


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces (apostrophes kept), single spaces."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the number of reference words (0.0 = every word right).

    An empty reference scores 0.0 against an empty hypothesis and 1.0 against anything else.
    """
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))
