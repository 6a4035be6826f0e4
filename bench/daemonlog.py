"""Read the daemon's per-turn log lines.

A finished turn is logged by ``aicallerd.call.session`` as::

    ... [CA...] turn 3: caller='...' agent='...' [interrupted] | endpoint_wait=600ms
        stt_tail=41ms llm_first_token=60ms first_sentence=250ms tts_first_audio=180ms
        first_frame=480ms voice_to_voice=1080ms speculative interrupted
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

_TURN = re.compile(r"\[(?P<sid>CA[0-9a-fA-F]+)\] turn (?P<n>\d+): (?P<body>.*)$")
_TEXT = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_TEXTS = re.compile(rf"caller={_TEXT} agent={_TEXT}")
_LEG = re.compile(r"(\w+)=(?:(-?\d+(?:\.\d+)?)ms|-(?=\s|$))")


@dataclass
class DaemonTurn:
    """One "turn N:" line that carries latency legs (milliseconds; None = not reached)."""

    call_sid: str
    number: int
    caller: str
    agent: str
    legs: dict[str, float | None] = field(default_factory=dict)
    speculative: bool = False
    interrupted: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "turn": self.number,
            "caller": self.caller,
            "agent": self.agent,
            "legs_ms": self.legs,
            "speculative": self.speculative,
            "interrupted": self.interrupted,
        }


def _unquote(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text


def parse_turn(line: str) -> DaemonTurn | None:
    """The turn line's fields, or None for any other line (e.g. "no words heard")."""
    m = _TURN.search(line)
    if m is None or " | " not in m["body"]:
        return None
    head, _, tail = m["body"].rpartition(" | ")
    legs: dict[str, float | None] = {}
    for name, value in _LEG.findall(tail):
        legs[name] = float(value) if value else None
    if not legs:
        return None
    words = set(_LEG.sub("", tail).split())
    texts = _TEXTS.search(head)
    caller, agent = (_unquote(texts[1]), _unquote(texts[2])) if texts else (head, "")
    return DaemonTurn(
        call_sid=m["sid"],
        number=int(m["n"]),
        caller=caller,
        agent=agent,
        legs=legs,
        speculative="speculative" in words,
        interrupted="interrupted" in words or "[interrupted]" in head,
    )


def turns_of(lines: list[str], call_sid: str) -> list[DaemonTurn]:
    """The call's turn lines, in log order."""
    out = []
    for line in list(lines):
        if call_sid in line:
            turn = parse_turn(line)
            if turn is not None and turn.call_sid == call_sid:
                out.append(turn)
    return out


_BARGE = re.compile(r"barge-in: caller spoke (\d+(?:\.\d+)?)s over turn (\d+)")


def barge_ins_of(lines: list[str], call_sid: str) -> list[float]:
    """Seconds of caller speech the daemon had counted when it cut each reply."""
    return [float(m[1]) for line in list(lines) if call_sid in line and (m := _BARGE.search(line))]


def notable(lines: list[str], call_sid: str) -> list[str]:
    """Other lines of the call worth showing: dropped replies, errors, hang-ups, warnings."""
    keys = ("no words heard", "reply dropped", "hanging up", "ERROR", "WARNING", "failed")
    return [line for line in list(lines) if call_sid in line and any(k in line for k in keys)]
