"""Logging for aicallerd: one line per event on stderr, journald-aware, secrets masked.

Under systemd stderr is the journal ($JOURNAL_STREAM is set): each line starts with the
syslog priority `<N>` so `journalctl -p warning` works, and carries no timestamp because
journald adds its own. Elsewhere lines read `2026-11-26 12:00:00.123 INFO aicallerd.call: ...`.
journald splits its stream at newlines, so every line of a multi-line message or traceback
repeats the full prefix (priority, logger, `[CA...]`): grep and priority filters see them all.
What goes into the prefix is escaped (`prefix_safe`), so a hostile CallSid cannot end the line
and forge one of its own, e.g. `x]\\n<0>...` at emergency priority.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
# Libraries that log one INFO line per HTTP request; their story is told by our own lines.
_CHATTY = ("httpx", "httpcore", "hpack", "urllib3", "faster_whisper")
MASK = "***"
MAX_TAG = 64  # a CallSid is 34 characters; anything longer is not one


def syslog_priority(levelno: int) -> int:
    """Syslog priority for a logging level (custom levels round towards the more severe)."""
    for level in sorted(_PRIORITY):
        if levelno <= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.CRITICAL]


def prefix_safe(text: object, limit: int = MAX_TAG) -> str:
    """`text` for a line prefix: non-printable characters as Python escapes, at most `limit`.

    Unicode's notion of printable excludes every line break journald or a terminal honours
    (\\n, \\r, \\x85, \\u2028...) and every other control character, ESC included.
    """
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class LineFormatter(logging.Formatter):
    """`<6>name: [CA..] text` (journal) or `YYYY-mm-dd HH:MM:SS.mmm LEVEL name: [CA..] text`."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def prefix(self, record: logging.LogRecord) -> str:
        call_sid = getattr(record, "call_sid", None)
        tag = f"[{prefix_safe(call_sid)}] " if call_sid else ""
        name = prefix_safe(record.name, 200)
        if self.journal:
            return f"<{syslog_priority(record.levelno)}>{name}: {tag}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        millis = int(record.msecs)
        return f"{stamp}.{millis:03d} {prefix_safe(record.levelname)} {name}: {tag}"

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        head = self.prefix(record)
        return "\n".join(head + line for line in text.splitlines() or [""])


class SecretFilter(logging.Filter):
    """Replaces every configured secret in a record's message, traceback and stack with ***.

    Attached to the handler, so it sees records from every logger, and it rewrites the record
    (message rendered, args dropped) before any formatter runs.
    """

    MIN_LENGTH = 6  # a 2-letter "secret" would mask half the log

    def __init__(self) -> None:
        super().__init__()
        self._secrets: list[str] = []

    def add(self, secret: str) -> None:
        secret = secret.strip()
        if len(secret) < self.MIN_LENGTH or secret in self._secrets:
            return
        self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format: leave it to logging's own error report
            return True
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


# Logging is process-wide by nature; so is the one secret filter every handler shares.
_SECRETS = SecretFilter()


def add_secret(secret: str) -> None:
    """Never print this string (a token, key or password) in any log line from now on."""
    _SECRETS.add(secret)


def add_secrets(secrets: Iterable[str]) -> None:
    for secret in secrets:
        add_secret(secret)


def parse_level(level: str) -> int:
    """`info`, `WARNING`, `debug`... -> logging level; ValueError names the bad value."""
    value = logging.getLevelName(level.strip().upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def is_journal(environ: Mapping[str, str], stream: TextIO) -> bool:
    """Whether `stream` is journald's: $JOURNAL_STREAM is `dev:ino` of the journal's socket.

    Comparing with the stream's own dev:ino (as systemd recommends) keeps a child that merely
    inherited the variable, with stderr redirected elsewhere, on the plain format.
    """
    value = environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return True  # not a real file (tests, wrappers): trust the environment
    return value == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str, environ: Mapping[str, str], stream: TextIO | None = None) -> None:
    """Route all logging to stderr, one prefixed line each; safe to call again on reload."""
    numeric = parse_level(level)  # first: a bad level on reload must not cost us the handler
    stream = sys.stderr if stream is None else stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_aicaller", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler._aicaller = True  # type: ignore[attr-defined]
    handler.setFormatter(LineFormatter(journal=is_journal(environ, stream)))
    handler.addFilter(_SECRETS)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


class CallLogAdapter(logging.LoggerAdapter):
    """Tags every record with the call's SID, so `journalctl | grep CA...` tells its story."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def call_logger(call_sid: str, name: str = "aicallerd.call") -> CallLogAdapter:
    """A logger whose lines all carry `[call_sid]`."""
    return CallLogAdapter(logging.getLogger(name), {"call_sid": call_sid})
