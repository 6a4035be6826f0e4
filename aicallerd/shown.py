"""Text that came from the network, made safe for one log line."""

from __future__ import annotations

LIMIT = 80


def shown(value: object, limit: int = LIMIT) -> str:
    """``repr`` (no raw newline or ``<N>`` can start a forged journal line), truncated, so
    a megabyte of garbage costs one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def plain(text: str, limit: int = LIMIT) -> str:
    """As is when short and printable (the usual, honest case), else `shown`."""
    return text if len(text) <= limit and text.isprintable() else shown(text, limit)
