"""Twilio resource identifiers: a two-letter type prefix and 32 hex digits.

A SID arrives from outside (webhook forms, the Media Stream's ``start``) and is then used in
log prefixes, file names and database keys; checking its shape first means none of those can
be handed a newline, a path or a megabyte. The patterns are anchored with ``\\A``/``\\Z``, so
``match``, ``fullmatch`` and ``search`` all check the whole string.
"""

import re

__all__ = [
    "ACCOUNT_SID",
    "CALL_SID",
    "STREAM_SID",
    "valid_call_sid",
]

# Twilio's own API definitions spell these `^CA[0-9a-fA-F]{32}$` (etc.); live SIDs are lowercase.
CALL_SID = re.compile(r"\ACA[0-9a-fA-F]{32}\Z")
STREAM_SID = re.compile(r"\AMZ[0-9a-fA-F]{32}\Z")
ACCOUNT_SID = re.compile(r"\AAC[0-9a-fA-F]{32}\Z")


def valid_call_sid(value: object) -> bool:
    """True for a string shaped like a CallSid (``CA`` + 32 hex digits)."""
    return isinstance(value, str) and CALL_SID.match(value) is not None
