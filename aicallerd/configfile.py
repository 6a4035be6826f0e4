"""Render etc/aicaller.conf from the schema (pure), so the shipped file cannot drift from it.

``python -m aicallerd.configfile > etc/aicaller.conf`` regenerates it; a test checks that the
shipped file is exactly this rendering and that loading it gives exactly the defaults.
"""

from __future__ import annotations

import re
import sys
import textwrap
import tomllib
from typing import Any

from aicallerd.configkeys import Key
from aicallerd.configschema import COMMENTS, KEYS

WIDTH = 100
"""Lines stay within this many characters, like the code."""
_NBSP = "\u00a0"  # joins a tag's words so that wrapping never splits "(credential x)"

HEADER = """\
aicallerd configuration (TOML). Installed as /etc/aicaller/aicaller.conf.

Every key is listed with its default value, so this file changes nothing as shipped: edit what \
you need. Unknown keys are errors (a typo never silently falls back to a default). Environment \
variables named in [BRACKETS] override the file (systemd: Environment= or EnvironmentFile=). \
Keep secrets out of this file: use the environment or systemd credentials \
(LoadCredential=twilio_auth_token:/path/to/file and so on).
Reload after editing: systemctl reload aicallerd (or aicallerctl reload). Keys marked \
(restart) keep their running value until systemctl restart aicallerd.
Generated from aicallerd/configschema.py by python -m aicallerd.configfile."""

CONTACTS = """\
# People `aicallerctl call NAME` can dial. NAME: letters, digits, _ and -; case is ignored.
# A number (E.164), or a table with an optional prompt (extra instructions for calls with
# this contact) and greeting (replaces [call] greeting).
[contacts]
# mom = "+15551234567"
#
# [contacts.dentist]
# number = "+15557654321"
# prompt = "You are calling the dentist's office to move Tuesday's appointment to Friday."
# greeting = "Hi, this is the assistant calling for Alex about an appointment."
"""


def render_default_config() -> str:
    """The documented default configuration: every section and key, with its comment."""
    out = _comment(HEADER)
    for section, keys in KEYS.items():
        out.append("")
        out.extend(_comment(COMMENTS[section]))
        out.append(f"[{section}]")
        for key in keys.values():
            out.extend(_comment(_key_comment(key)))
            out.append(f"{key.name} = {toml_value(key.default)}")
    out.append("")
    return "\n".join(out) + "\n" + CONTACTS


def _key_comment(key: Key) -> str:
    spec = key.spec
    tags = [f"[{spec.env}]"] if spec.env else []
    if spec.credential:
        tags.append(f"(credential{_NBSP}{spec.credential})")
    if spec.restart:
        tags.append("(restart)")
    return " ".join([spec.comment, *tags])


def _comment(text: str) -> list[str]:
    """`text` as # lines no wider than WIDTH; blank lines stay as a bare #."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        wrapped = textwrap.wrap(
            paragraph, WIDTH - 2, break_long_words=False, break_on_hyphens=False
        )
        if wrapped:
            lines.extend(f"# {line}".replace(_NBSP, " ") for line in wrapped)
        else:
            lines.append("#")
    return lines


def toml_value(value: Any) -> str:
    """A default as TOML; long one-line strings as a multi-line string with line continuations."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if not isinstance(value, str):
        raise TypeError(f"no TOML form for {value!r}")
    basic = '"' + _escape(value) + '"'
    if len(basic) <= WIDTH - 20:
        return basic
    multi = '"""\\\n' + "\\\n".join(_continued_lines(value, WIDTH - 10)) + '\\\n"""'
    return multi if tomllib.loads(f"v = {multi}")["v"] == value else basic


def _continued_lines(value: str, width: int) -> list[str]:
    """Escaped `value` cut after runs of spaces: a line continuation (a trailing backslash)
    eats the newline and the next line's leading whitespace, so each line after the first
    starts with a word, and leading spaces of the value are written as \\u0020."""
    stripped = value.lstrip(" ")
    escaped = "\\u0020" * (len(value) - len(stripped)) + _escape(stripped)
    lines = [""]
    for piece in re.findall(r"\S+ *| +", escaped):
        if lines[-1] and len(lines[-1]) + len(piece.rstrip(" ")) > width:
            lines.append("")
        lines[-1] += piece
    return lines


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
_ESCAPES.update({"\f": "\\f", "\r": "\\r"})


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


if __name__ == "__main__":
    sys.stdout.write(render_default_config())
