"""Twilio's playout buffer, modelled sans-I/O for the local Twilio stand-in.

Twilio queues the audio a stream sends and plays it in real time; a mark is echoed when
playback reaches it; ``clear`` empties the queue and echoes every pending mark at once. The
stand-in drives :meth:`PlayoutBuffer.tick` every 20 ms and records what the caller hears.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

FRAME = 160  # bytes of mu-law per 20 ms
SILENCE = b"\xff" * FRAME


@dataclass
class Tick:
    """What one 20 ms of playout produced."""

    audio: bytes  # always FRAME bytes: agent audio, or silence when the buffer is empty
    audible: bool  # True when agent audio played (not fill)
    marks: list[str] = field(default_factory=list)  # marks whose position was reached
    underrun: bool = False  # the buffer ran dry in the middle of agent speech


class PlayoutBuffer:
    def __init__(self) -> None:
        self._items: collections.deque[bytes | str] = collections.deque()
        self._partial = b""
        self.queued_bytes = 0
        self.frames_played = 0
        self.cleared = 0
        self._audio_since_mark = False

    def push_audio(self, payload: bytes) -> None:
        if payload:
            self._items.append(payload)
            self.queued_bytes += len(payload)

    def push_mark(self, name: str) -> None:
        self._items.append(name)

    def clear(self) -> list[str]:
        """Drop queued audio; return the pending marks, which Twilio echoes immediately."""
        marks = [item for item in self._items if isinstance(item, str)]
        self._items.clear()
        self._partial = b""
        self.queued_bytes = 0
        self.cleared += 1
        self._audio_since_mark = False
        return marks

    @property
    def empty(self) -> bool:
        return not self._items and not self._partial

    def tick(self) -> Tick:
        """Play the next 20 ms."""
        marks: list[str] = []
        out = bytearray(self._partial)
        self._partial = b""
        while self._items and (len(out) < FRAME or isinstance(self._items[0], str)):
            item = self._items[0]
            if isinstance(item, str):
                if len(out) >= FRAME:
                    break
                marks.append(self._items.popleft())  # type: ignore[arg-type]
                continue
            self._items.popleft()
            out += item
        if len(out) > FRAME:
            self._partial = bytes(out[FRAME:])
            del out[FRAME:]
        played = len(out)
        self.queued_bytes -= played
        audible = played > 0
        if audible:
            self._audio_since_mark = True
        if marks and self.empty:
            self._audio_since_mark = False
        # Ran dry while the audio in flight was not yet at a mark: a gap mid-sentence.
        underrun = played < FRAME and self.empty and self._audio_since_mark and not marks
        if underrun:
            self._audio_since_mark = False
        if played < FRAME:
            out += b"\xff" * (FRAME - played)
        self.frames_played += 1
        return Tick(bytes(out), audible, marks, underrun)
