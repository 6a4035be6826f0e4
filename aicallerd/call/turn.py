"""The caller's phrase and the agent's turn: the state a call's turn-taking works on.

A *phrase* is what the endpointer delimits: the caller's words from speech onset to the
end-of-turn silence, transcribed chunk by chunk while they talk. A *turn* is the agent's
answer to one phrase, inside its own cancel scope. A turn may start *speculatively* at a
short pause: it runs the whole pipeline but its audio waits behind a closed :class:`Gate`
until the pause becomes the end of the turn (commit) or the caller resumes (discard).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import trio

from aicallerd.call.metrics import TurnLegs
from aicallerd.call.player import Gate
from aicallerd.call.reply import Reply

BACKCHANNELS = frozenset(
    "mm mhm mmhm hmm hm uh huh uhhuh mm-hmm mm-hm uh-huh yeah yes yep yup ok okay right "
    "sure alright ah oh um i see got it".split()
)
_WORD = re.compile(r"[a-z']+(?:-[a-z']+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def is_backchannel(text: str) -> bool:
    """True for "mm-hm", "yeah okay", "uh huh": listening noises, not a request."""
    ws = words(text)
    return bool(ws) and all(w in BACKCHANNELS or w.replace("-", "") in BACKCHANNELS for w in ws)


@dataclass
class Phrase:
    """One caller utterance; chunk transcripts arrive out of band, in any order."""

    phrase_id: int
    started_mono: float
    texts: dict[int, str] = field(default_factory=dict)
    pending: int = 0
    speech_seconds: float = 0.0
    audio: list[np.ndarray] = field(default_factory=list)
    chunks_seen: int = 0
    # The short chunk held back at a Pause, transcribed for a speculative turn: (index, text).
    provisional: tuple[int, str] | None = None
    provisional_generation: int = 0
    word_check: bool = False  # a barge-in word check is running for this phrase
    _settled: trio.Event = field(default_factory=trio.Event)

    def add_pending(self) -> None:
        self.pending += 1
        if self._settled.is_set():
            self._settled = trio.Event()

    def resolve(self, index: int, text: str) -> None:
        self.texts[index] = text
        self._one_done()

    def resolve_provisional(self, index: int, text: str, generation: int) -> None:
        """A held-back chunk's transcript; stale if the caller resumed since it started."""
        if generation == self.provisional_generation:
            self.provisional = (index, text)
        self._one_done()

    def drop_provisional(self) -> None:
        """The caller resumed: the held-back chunk will grow, its transcript is stale."""
        self.provisional = None
        self.provisional_generation += 1

    def _one_done(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._settled.set()

    async def settled(self) -> None:
        """Wait until every chunk sent to STT so far has its transcript."""
        if self.pending:
            await self._settled.wait()

    def text(self, *, with_provisional: bool = False) -> str:
        texts = dict(self.texts)
        if with_provisional and self.provisional is not None:
            texts.setdefault(*self.provisional)
        return " ".join(t for _, t in sorted(texts.items()) if t).strip()

    def audio_so_far(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)


@dataclass
class Turn:
    """The agent's answer to one phrase."""

    number: int
    phrase: Phrase
    gate: Gate
    speculative: bool
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    committed: trio.Event = field(default_factory=trio.Event)
    legs: TurnLegs = field(default_factory=TurnLegs)
    reply: Reply | None = None
    caller_text: str = ""
    speech_end_mono: float = 0.0
    decided_mono: float = 0.0
    first_frame_at: float | None = None
    interrupted: bool = False

    def commit(self, speech_end_mono: float, decided_mono: float) -> None:
        """The pause became the end of the turn: let the caller hear the reply."""
        self.speech_end_mono = speech_end_mono
        self.decided_mono = decided_mono
        self.legs.endpoint_wait = decided_mono - speech_end_mono
        self.gate.open()
        self.committed.set()

    def on_first_frame(self, t: float) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = t
