"""The two TwiML documents the daemon answers calls with.

Built by hand with strict escaping (rather than a TwiML library) so the output is
byte-for-byte predictable; Twilio's Stream rules are checked here, where a mistake
costs a ValueError instead of a call that silently fails with error 31920/31922.
"""

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["connect_stream", "say_hangup"]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_MAX_PARAMETER = 500  # Twilio: each <Parameter> name+value under 500 characters
# Characters XML 1.0 cannot carry at all, even escaped.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _check(text: str) -> str:
    match = _INVALID_XML.search(text)
    if match:
        raise ValueError(f"character {match.group()!r} cannot appear in TwiML")
    return text


def _text(text: str) -> str:
    return _check(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    # Whitespace as character references, or XML attribute normalisation turns it into spaces.
    escaped = _text(value).replace('"', "&quot;")
    return escaped.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


def connect_stream(stream_url: str, parameters: Mapping[str, str]) -> str:
    """TwiML that connects the call to our bidirectional Media Stream.

    Data travels as ``<Parameter>`` elements because Twilio forbids a query string in
    the Stream url.
    """
    parts = urlsplit(stream_url)
    if parts.scheme.lower() != "wss" or not parts.netloc:
        raise ValueError(f"Stream url must be wss://host/...: {stream_url!r}")
    if "?" in stream_url or "#" in stream_url:
        raise ValueError(f"Stream url must not have a query string or fragment: {stream_url!r}")
    elements = []
    for name, value in parameters.items():
        if not name:
            raise ValueError("Stream parameter name must not be empty")
        if len(name) + len(value) >= _MAX_PARAMETER:
            raise ValueError(
                f"Stream parameter {name!r}: name+value must be under {_MAX_PARAMETER} characters"
            )
        elements.append(f'<Parameter name="{_attr(name)}" value="{_attr(value)}"/>')
    return (
        f'{_DECLARATION}<Response><Connect><Stream url="{_attr(stream_url)}">'
        f"{''.join(elements)}</Stream></Connect></Response>"
    )


def say_hangup(text: str) -> str:
    """TwiML that speaks a short message (e.g. "service unavailable") and ends the call."""
    return f"{_DECLARATION}<Response><Say>{_text(text)}</Say><Hangup/></Response>"
