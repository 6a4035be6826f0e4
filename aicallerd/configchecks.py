"""Value checks for configuration keys (pure: no I/O).

Each factory returns a `Check`: the Python type a key holds, the words an error uses for what
was expected, and a function that validates (and may normalise) a value of that type. The
schema in `aicallerd.configschema` attaches one to every key; the loader in `aicallerd.config`
runs them and turns `Invalid` into a `ConfigError` that names where the value came from.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

E164 = re.compile(r"\+[1-9][0-9]{7,14}")
E164_EXPECTED = "a phone number in E.164 form (+ and 8-15 digits)"
MIN_TRIGGER_TOKEN = 32
"""Characters a call-trigger token needs: it is a bearer secret exposed to the internet."""


class Invalid(Exception):
    """Raised by a check; the key's `expected` text is used unless a message is given."""

    def __init__(self, expected: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class Check:
    """What a key holds, how an error describes a good value, and the validator."""

    kind: type
    expected: str
    validate: Callable[[Any], Any] | None = None

    def __call__(self, value: Any) -> Any:
        return self.validate(value) if self.validate else value


def number(kind: type, lo: float | None = None, hi: float | None = None, *, above: bool = False):
    """An int or float key; `above` makes `lo` exclusive."""
    noun = "an integer" if kind is int else "a number"
    if lo is not None and hi is not None:
        expected = f"{noun} from {lo:g} to {hi:g}"
    elif lo is not None:
        expected = f"{noun} {'>' if above else '>='} {lo:g}"
    else:
        expected = noun

    def check(value: float) -> float:
        if not math.isfinite(value):
            raise Invalid()
        if lo is not None and (value <= lo if above else value < lo):
            raise Invalid()
        if hi is not None and value > hi:
            raise Invalid()
        return value

    return Check(kind, expected, check)


def choice(*options: str) -> Check:
    """One of a few words, case-insensitive; the value is lowercased."""

    def check(value: str) -> str:
        if value.lower() not in options:
            raise Invalid()
        return value.lower()

    return Check(str, "one of: " + ", ".join(options), check)


def pattern(regex: str, expected: str) -> Check:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise Invalid()
        return value

    return Check(str, expected, check)


def text(*, nonempty: bool = False) -> Check:
    def check(value: str) -> str:
        if nonempty and not value.strip():
            raise Invalid()
        return value

    return Check(str, "a non-empty string" if nonempty else "a string", check)


def trigger_token() -> Check:
    """A bearer token for the call trigger: "" turns the trigger off, else it must be long."""

    def check(value: str) -> str:
        if value and len(value) < MIN_TRIGGER_TOKEN:
            raise Invalid()
        return value

    expected = f'"" (trigger off) or a token of at least {MIN_TRIGGER_TOKEN} characters'
    return Check(str, expected, check)


def url(schemes: tuple[str, ...], expected: str) -> Check:
    """An absolute URL without query or fragment; a trailing slash is dropped."""

    def check(value: str) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise Invalid() from None
        if parts.scheme not in schemes or not parts.hostname:
            raise Invalid()
        if parts.query or parts.fragment or "?" in value or "#" in value or " " in value:
            raise Invalid()
        return value.rstrip("/")

    return Check(str, expected, check)


_LISTEN = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9._-]+):(\d{1,5})")


def split_listen(value: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host without brackets, port); raises `Invalid`."""
    m = _LISTEN.fullmatch(value)
    if not m:
        raise Invalid()
    if m.group(1) is not None:
        try:
            ipaddress.IPv6Address(m.group(1))
        except ValueError:
            raise Invalid() from None
        host, port = m.group(1), int(m.group(2))
    else:
        host, port = m.group(3), int(m.group(4))
    if not 1 <= port <= 65535:
        raise Invalid("host:port with a port from 1 to 65535")
    return host, port


def listen() -> Check:
    def check(value: str) -> str:
        split_listen(value.strip())
        return value.strip()

    return Check(str, "host:port", check)


def stream_path() -> Check:
    def check(value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", value) or "//" in value:
            raise Invalid()
        return value

    return Check(str, "a URL path starting with /", check)


def abs_path_or_empty(expected: str = '"" or an absolute path', *, max_bytes: int = 0) -> Check:
    """Empty (resolved by the loader) or an absolute path, shorter than `max_bytes` if given."""

    def check(value: str) -> str:
        if value and not value.startswith("/"):
            raise Invalid()
        if max_bytes and len(value.encode()) >= max_bytes:
            raise Invalid()
        return value

    return Check(str, expected, check)


def language() -> Check:
    def check(value: str) -> str:
        if not re.fullmatch(r"([A-Za-z]{2,3})?", value):
            raise Invalid()
        return value.lower()

    return Check(str, '"" (detect) or a language code like "en"', check)


def boolean() -> Check:
    return Check(bool, "true or false")
