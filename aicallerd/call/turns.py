"""The state the conversation core keeps per caller phrase and per agent turn (sans-I/O).

Plain records; every decision about them is :class:`aicallerd.call.conversation.Conversation`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEY_PHRASE_ID = -1  # the phrase of a turn made of key presses: never the endpointer's


@dataclass(eq=False)
class Phrase:
    """One caller utterance, transcribed whole at each pause (see ``Conversation._heard``)."""

    id: int
    started: float
    chunks: list[np.ndarray] = field(default_factory=list)  # the endpointer's cuts, in order
    pending: set[int] = field(default_factory=set)  # transcription jobs still out
    version: int = 0  # bumped when the caller goes on after a pause: older transcripts are stale
    heard: str | None = None  # the transcript of everything said up to the last pause
    unheard: bool = False  # that transcription failed or missed its deadline
    speech_seconds: float = 0.0
    audio: list[np.ndarray] = field(default_factory=list)  # kept only for word checks
    check_job: int | None = None
    checked_frames: int = 0
    cut_line: bool = False  # already stopped a fixed line
    answered: bool = False  # a turn was made of it
    ended: bool = False
    speech_end: float = 0.0
    decided: float = 0.0

    def text(self) -> str:
        return (self.heard or "").strip()


@dataclass(eq=False)
class Turn:
    """The agent's answer to one phrase."""

    number: int
    phrase: Phrase
    speculative: bool
    caller_text: str = ""
    started: bool = False  # StartReply (or Replay) was emitted
    committed: bool = False
    interrupted: bool = False
    replay: bool = False


@dataclass
class Job:
    phrase: Phrase
    kind: str  # "phrase" | "check" | "stale"
    index: int = 0
