"""Listening noises: "mm-hm", "yeah okay", "uh huh" are not requests (sans-I/O)."""

import re

BACKCHANNELS = frozenset(
    "mm mhm mmhm hmm hm uh huh uhhuh mm-hmm mm-hm uh-huh yeah yes yep yup ok okay right "
    "sure alright ah oh um i see got it".split()
)
_WORD = re.compile(r"[a-z']+(?:-[a-z']+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def is_backchannel(text: str) -> bool:
    """True for "mm-hm", "yeah okay", "uh huh": listening noises, not a request."""
    ws = words(text)
    return bool(ws) and all(w in BACKCHANNELS or w.replace("-", "") in BACKCHANNELS for w in ws)
