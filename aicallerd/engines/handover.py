"""Where a local voice picks up a sentence a cloud voice dropped (pure).

The cloud stream says nothing about which words its audio covered, so the split is
estimated from the seconds already played at a typical speaking rate, then moved back a
word: repeating a word sounds better than skipping one.
"""

from __future__ import annotations

import re

CHARS_PER_SECOND = 14.0  # conversational English at speed 1.0
_WORD = re.compile(r"\S+")


def unspoken_text(
    text: str, seconds_heard: float, *, speed: float = 1.0, cps: float = CHARS_PER_SECOND
) -> str:
    """The part of `text` still to say after `seconds_heard` of it were played."""
    if seconds_heard <= 0:
        return text.strip()
    said = seconds_heard * cps * speed
    if said >= len(text.rstrip()):
        return ""
    starts = [m.start() for m in _WORD.finditer(text)]
    # The word being spoken at `said`, then one further back.
    current = max((i for i, s in enumerate(starts) if s <= said), default=0)
    back = max(0, current - 1)
    return text[starts[back] :].strip() if starts else ""
