"""Outbound audio: the one task that writes to a call's WebSocket.

Twilio plays whatever we send in real time from its own buffer. If we push a whole reply at
once, a barge-in ``clear`` throws away seconds of audio we can no longer account for; if we
sleep 20 ms after each send, scheduling jitter drains Twilio's buffer and the caller hears
gaps. So the sender paces audio against absolute deadlines (the time Twilio's buffer will
run dry) and keeps only a small lead queued there. Marks ride in the same queue, right after
the audio they follow, so an echoed mark tells exactly what the caller has heard.

The lead is what absorbs a late wake-up: a busy event loop (dozens of calls on one node), a
stalled host or network jitter on the way to Twilio. It starts at 200 ms (at 80 ms, 50 calls
with cloud engines let 5-10 % of replies run dry for 20-60 ms) and grows for the rest of the
call when the sender finds itself later than half of it (:meth:`PlaybackClock.late`). A
larger lead costs the caller nothing: first audio never waits for it, and a barge-in
``clear`` empties Twilio's buffer whatever it holds.

Each ``media`` message costs the event loop JSON, base64, a WebSocket frame and a socket
write whatever its length, so the sender does not send one per 20 ms frame. Twilio's buffer
has a low-water mark (``lead``) and a high-water mark (``lead + batch``): once it has
fallen to the low-water mark, one message tops it up to the high-water mark with whole
frames of what is queued. A speaking call then sends 1/``batch`` messages a second (10 at
the default 100 ms instead of 50), and Twilio never holds more than ``lead + batch`` of
our audio (300 ms at the defaults). Nothing ever waits to fill a message: whatever is
queued goes out as soon as the buffer is at or below the low-water mark, so a reply's first
audio leaves at once and a slow engine's chunks leave as they come. A message never runs
past a mark.

``batch`` = 100 ms by measurement (``python -m bench.player_send``: the sending loop's CPU
per second of audio over a loopback trio-websocket is about 6.1 ms at 20 ms messages,
1.1-1.5 ms at 100 ms, 0.65 ms at 200 ms). 100 ms takes our messages from half of a speaking
call's WebSocket traffic (50 of 100 a second, beside Twilio's 50 inbound frames, which we
cannot batch) to a sixth (10 of 60); 200 ms would save only another ~0.5 ms a second per
call while adding another 100 ms to what Twilio holds.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from aicallerd.call.settings import DEFAULT_LEAD
from aicallerd.twilio import media

MAX_LEAD = 1.0  # what a lead grown by late wake-ups stops at
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_SECONDS = 0.02
BYTES_PER_SECOND = 8000
_EPS = 1e-6  # seconds: float noise in the clock arithmetic must not cost a whole frame

log = logging.getLogger("aicallerd.call")


@dataclass(frozen=True)
class _Audio:
    payload: bytes
    on_sent: Callable[[float], None] | None = None
    queued_at: float = 0.0


@dataclass(frozen=True)
class _Mark:
    name: str


@dataclass
class PlaybackClock:
    """Sans-I/O model of Twilio's playout buffer as seen from our side.

    ``buffer_end`` is when the audio already sent will have finished playing. Audio may be
    sent once ``buffer_end - now <= lead`` (the low-water mark), as much as brings the
    buffer up to ``lead + batch`` (the high-water mark); the buffer never runs ahead of
    real time.
    """

    lead: float = DEFAULT_LEAD
    batch: float = 0.1
    buffer_end: float = 0.0
    max_lead: float = MAX_LEAD

    def send_at(self, now: float) -> float:
        """Earliest time the next audio may be sent."""
        return max(now, self.buffer_end - self.lead)

    def room(self, now: float) -> int:
        """Bytes the next message may carry: whole frames up to the high-water mark, and
        always at least one frame (the caller of this checked :meth:`send_at`)."""
        room = self.lead + self.batch - self.queued(now) + _EPS
        return max(1, int(room / FRAME_SECONDS)) * FRAME_BYTES

    def sent(self, now: float, seconds: float) -> None:
        self.buffer_end = max(self.buffer_end, now) + seconds

    def queued(self, now: float) -> float:
        """Seconds of our audio still waiting in Twilio's buffer."""
        return max(0.0, self.buffer_end - now)

    def reset(self, now: float) -> None:
        self.buffer_end = now

    def late(self, now: float, ready: float) -> None:
        """The next audio could have gone at ``ready`` and goes at ``now``. A sender later
        than half the lead would soon let the buffer run dry, so the lead becomes twice
        that lateness (up to ``max_lead``): a loop that stalled once will stall again."""
        lateness = now - ready
        if lateness > self.lead / 2:
            self.lead = min(self.max_lead, max(self.lead, 2 * lateness))


class Transport(Protocol):
    """The WebSocket as a call sees it (webstream.SocketTransport in the daemon, memory in
    tests)."""

    async def receive(self) -> str | bytes: ...
    def buffered(self) -> int:
        """Messages :meth:`receive` can return without waiting."""
        ...

    async def send(self, data: str) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


class Player:
    """Audio, marks, ``clear`` and the close for one call, written by :meth:`run` alone.

    Producers only queue (all methods but :meth:`run` are synchronous): a ``clear`` is sent
    ahead of anything queued, the close after it, so nothing reaches the socket out of order
    and no two tasks ever write to it at once.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        lead: float = DEFAULT_LEAD,
        batch: float = 0.1,
        stream_sid: str = "",
        write_timeout: float = 5.0,
    ) -> None:
        self.transport = transport
        self.write_timeout = write_timeout
        self.stream_sid = stream_sid
        self.clock = PlaybackClock(lead=lead, batch=batch)
        self._queue: collections.deque[_Audio | _Mark] = collections.deque()
        self._head_sent = 0  # bytes of the first queued audio already sent
        self._clears = 0  # bumped by each clear, so a send it overtook is not counted
        self._wakeup = trio.Event()
        self._clear_due = False
        self._close: tuple[int, str] | None = None
        self._pending_marks: list[str] = []
        self._cleared_marks: set[str] = set()
        self._played_marks: set[str] = set()
        self._mark_listeners: list[Callable[[str], None]] = []

    # -- producer side ------------------------------------------------------------------
    def enqueue_audio(self, ulaw: bytes, on_sent: Callable[[float], None] | None = None) -> None:
        """Queue mu-law audio of any length; it is sent paced, in messages of whole frames.

        ``on_sent(t)`` is called with the send time of this audio's first frame, which is
        how a turn learns its voice-to-voice latency.
        """
        if self._close is not None or not ulaw:
            return
        self._queue.append(_Audio(ulaw, on_sent, trio.current_time()))
        self._wakeup.set()

    def enqueue_mark(self, name: str) -> None:
        if self._close is not None:
            return
        self._queue.append(_Mark(name))
        self._wakeup.set()

    def clear(self) -> list[str]:
        """Drop everything not yet played; the sender tells Twilio to do the same, first.

        Returns the marks that were still outstanding: Twilio echoes them right after a
        ``clear`` but their audio was never heard, so they must not count as played.
        """
        dropped = list(self._pending_marks)
        dropped += [item.name for item in self._queue if isinstance(item, _Mark)]
        self._queue.clear()
        self._head_sent = 0
        self._clears += 1
        self._cleared_marks.update(self._pending_marks)
        self._pending_marks.clear()
        self.clock.reset(trio.current_time())
        self._clear_due = True
        self._wakeup.set()
        for name in dropped:  # finished, though unheard: nobody should wait for them
            for listener in list(self._mark_listeners):
                listener(name)
        return dropped

    def close(self, code: int, reason: str) -> None:
        """Close the stream once what is queued before now has been written."""
        if self._close is None:
            self._close = (code, reason)
            self._wakeup.set()

    # -- Twilio side --------------------------------------------------------------------
    def on_mark(self, name: str) -> bool:
        """Record an echoed mark. False when it is an echo of audio we cleared."""
        if name in self._cleared_marks:
            self._cleared_marks.discard(name)
            return False
        if name in self._pending_marks:
            self._pending_marks.remove(name)
        if not self._pending_marks and not self._queue:
            # Every sent frame is followed by a mark, so Twilio's buffer is empty now,
            # whatever our estimate of its playout says.
            self.clock.reset(trio.current_time())
        self._played_marks.add(name)
        for listener in list(self._mark_listeners):
            listener(name)
        return True

    def add_mark_listener(self, listener: Callable[[str], None]) -> None:
        """``listener(name)`` runs when a mark is played or dropped by a ``clear``."""
        self._mark_listeners.append(listener)

    def remove_mark_listener(self, listener: Callable[[str], None]) -> None:
        if listener in self._mark_listeners:
            self._mark_listeners.remove(listener)

    def played(self, name: str) -> bool:
        return name in self._played_marks

    @property
    def playing(self) -> bool:
        """Audio is queued here, or still playing at Twilio by our own pacing: unlike
        :attr:`speaking` this does not wait for Twilio's marks (a peer that never echoes
        them would otherwise be spoken to forever)."""
        return bool(self._queue) or self.clock.queued(trio.current_time()) > 0

    @property
    def speaking(self) -> bool:
        """True while our audio is queued here or still playing at Twilio."""
        return (
            bool(self._queue)
            or bool(self._pending_marks)
            or self.clock.queued(trio.current_time()) > 0
        )

    # -- the sender task ----------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The only writer of the socket: clear first, then audio against absolute
        deadlines and marks in order; returns once the stream is closed."""
        task_status.started()
        while True:
            self._wakeup = trio.Event()
            if self._clear_due:
                self._clear_due = False
                await self._send(media.clear_message(self.stream_sid))
                continue
            if not self._queue:
                if self._close is not None:
                    await self.transport.close(*self._close)
                    return
                await self._wakeup.wait()
                continue
            item = self._queue[0]
            if isinstance(item, _Mark):
                self._queue.popleft()
                self._pending_marks.append(item.name)
                await self._send(media.mark_message(self.stream_sid, item.name))
                continue
            now = trio.current_time()
            due = self.clock.send_at(now)
            if due > now:
                with trio.move_on_at(due):
                    await self._wakeup.wait()  # a clear or close may not wait for pacing
                continue
            # When it could have gone: once queued, and once the buffer fell to the lead.
            ready = self.clock.buffer_end - self.clock.lead
            if self._head_sent == 0:
                ready = max(ready, item.queued_at)
            self.clock.late(now, ready)
            payload, callbacks = self._take(self.clock.room(now))
            clears = self._clears
            await self._send(media.media_message(self.stream_sid, payload))
            if clears == self._clears:  # else the clear that follows empties Twilio's buffer
                self.clock.sent(now, len(payload) / BYTES_PER_SECOND)
            for on_sent in callbacks:
                on_sent(now)

    def _take(self, limit: int) -> tuple[bytes, list[Callable[[float], None]]]:
        """Pop up to ``limit`` bytes of the audio at the head of the queue (never past a
        mark), with the ``on_sent`` callbacks of the chunks whose first byte is in them."""
        parts: list[bytes] = []
        callbacks: list[Callable[[float], None]] = []
        size = 0
        while size < limit and self._queue:
            item = self._queue[0]
            if not isinstance(item, _Audio):
                break
            start = self._head_sent
            if start == 0 and item.on_sent is not None:
                callbacks.append(item.on_sent)
            part = item.payload[start : start + limit - size]
            parts.append(part)
            size += len(part)
            if start + len(part) == len(item.payload):
                self._queue.popleft()
                self._head_sent = 0
            else:
                self._head_sent = start + len(part)
        return b"".join(parts), callbacks

    async def _send(self, text: str) -> None:
        """A peer that stops reading must not pin the call: TooSlowError ends it."""
        with trio.fail_after(self.write_timeout):
            await self.transport.send(text)


class Gate:
    """Holds a speculative reply's audio back from the player until the turn is committed.

    A speculative turn runs the whole pipeline while the caller might still go on talking;
    nothing it makes may be heard before :meth:`open`, and if it is cancelled instead the
    held audio is simply dropped with the gate.
    """

    def __init__(self, player: Player, *, is_open: bool) -> None:
        self._player = player
        self._held: list[tuple[bytes, Callable[[float], None] | None] | str] = []
        self.is_open = is_open
        self.is_shut = False

    def enqueue_audio(self, ulaw: bytes, on_sent: Callable[[float], None] | None = None) -> None:
        if self.is_shut:
            return
        if self.is_open:
            self._player.enqueue_audio(ulaw, on_sent)
        else:
            self._held.append((ulaw, on_sent))

    def enqueue_mark(self, name: str) -> None:
        if self.is_shut:
            return
        if self.is_open:
            self._player.enqueue_mark(name)
        else:
            self._held.append(name)

    def shut(self) -> None:
        """The turn was cancelled: nothing it still makes may reach the caller."""
        self.is_shut = True
        self._held.clear()

    def open(self) -> None:
        if self.is_shut:
            return
        self.is_open = True
        for item in self._held:
            if isinstance(item, str):
                self._player.enqueue_mark(item)
            else:
                self._player.enqueue_audio(*item)
        self._held.clear()
