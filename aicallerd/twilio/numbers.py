"""Phone numbers in E.164, the only form Twilio's `To`/`From` reliably accept.

Sans-I/O. We normalise only what is unambiguous (spaces, dashes, dots, parentheses, a
leading international ``00``) and never guess a country code: dialling the wrong country
costs money and surprises someone, so ``5551234567`` is an error that says what to type.
"""

from __future__ import annotations

import re

E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_SEPARATORS = re.compile(r"[\s.\-()/]")
EXPECTED = "a phone number in E.164 form, like +15551234567 (+, country code, 8-15 digits)"


class InvalidNumber(ValueError):
    """The text is not a phone number we can dial; str() is one line for a person."""

    def __init__(self, text: str, reason: str = "") -> None:
        self.text = text
        why = f" ({reason})" if reason else ""
        super().__init__(f"invalid phone number {text!r}: expected {EXPECTED}{why}")


def is_e164(text: str) -> bool:
    return E164.fullmatch(text) is not None


def looks_like_number(text: str) -> bool:
    """Whether a call target is meant as a number rather than a contact name.

    Contact names are ``[a-z0-9_-]+`` and may contain digits, so only a leading ``+``, ``(``
    or a digit-heavy string (no letters at all) counts as a number.
    """
    text = text.strip()
    if not text:
        return False
    if text[0] in "+(":
        return True
    return not re.search(r"[A-Za-z_]", text) and sum(c.isdigit() for c in text) >= 3


def normalize_e164(text: str) -> str:
    """``"+1 (555) 123-4567"`` -> ``"+15551234567"``; raises `InvalidNumber`."""
    compact = _SEPARATORS.sub("", text.strip())
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not compact.startswith("+"):
        raise InvalidNumber(text, "no country code: start with + and the country code")
    digits = compact[1:]
    if not digits.isdigit() or not digits.isascii():
        raise InvalidNumber(text, "only digits may follow the +")
    if digits.startswith("0"):
        raise InvalidNumber(text, "a country code never starts with 0")
    if not is_e164(compact):
        raise InvalidNumber(text, f"{len(digits)} digits")
    return compact
