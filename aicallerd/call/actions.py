"""What the conversation core returns (actions) and what it is told about a reply.

Plain frozen records, no behaviour: the I/O shell (:mod:`aicallerd.call.session`) carries
each action out; tests compare them as values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# -- what the core reads back from a reply -----------------------------------------------------


@dataclass(frozen=True)
class Spoken:
    """One sentence as queued: its text, its audio and the mark that follows it."""

    mark: str
    text: str
    audio: bytes


@dataclass(frozen=True)
class ReplyOutcome:
    """How a reply ended, as the caller's side saw it."""

    text: str  # everything that was queued
    heard: str  # the sentences whose closing mark came back
    unplayed: tuple[Spoken, ...]  # queued but not heard, for a resume
    audio_started: bool  # at least one frame of it was sent


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Transcribe:
    job: int
    pcm: np.ndarray


@dataclass(frozen=True)
class CancelTranscription:
    """The audio of ``job`` is stale (the caller went on): stop spending CPU on it."""

    job: int


@dataclass(frozen=True)
class StartReply:
    turn: int
    messages: tuple[dict[str, str], ...]
    speculative: bool


@dataclass(frozen=True)
class CommitReply:
    """The pause became the end of the turn: the reply may be heard."""

    turn: int
    speech_end: float
    decided: float


@dataclass(frozen=True)
class CancelReply:
    turn: int
    reason: str  # "discarded" (the caller went on) | "barge-in" | "hang-up"


@dataclass(frozen=True)
class Clear:
    """Drop every frame not yet played, here and in Twilio's buffer."""


@dataclass(frozen=True)
class Replay:
    """Speak the unheard rest of turn ``of_turn`` as turn ``turn``'s reply."""

    turn: int
    sentences: tuple[Spoken, ...]
    of_turn: int


@dataclass(frozen=True)
class SayLine:
    tag: str
    text: str


@dataclass(frozen=True)
class Record:
    """A finished exchange for the call log: the caller's words and what they heard."""

    turn: int
    caller_text: str
    agent_text: str
    interrupted: bool
    caller_started: float


@dataclass(frozen=True)
class RecordCaller:
    """A caller turn answered by a fixed line instead of a reply ("bye", "hold on")."""

    text: str
    caller_started: float


@dataclass(frozen=True)
class Close:
    reason: str


@dataclass(frozen=True)
class WarmPrompt:
    """The next turn's prompt up to the caller's words (their message left empty): an LLM
    server that caches prompts can evaluate the history now, while the caller talks,
    rather than before the next reply's first token."""

    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Note:
    """Something an operator reading the log should know; no effect on the call."""

    message: str


Action = (
    Transcribe
    | CancelTranscription
    | StartReply
    | CommitReply
    | CancelReply
    | Clear
    | Replay
    | SayLine
    | Record
    | RecordCaller
    | Close
    | WarmPrompt
    | Note
)
