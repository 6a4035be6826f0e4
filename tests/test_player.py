"""The Player's coalescing and pacing rules, on a virtual clock with an in-memory socket.

What a caller (and Twilio) sees: a reply's first audio leaves at once; queued audio leaves
in few, larger ``media`` messages; Twilio's buffer neither runs dry inside a reply nor holds
more than ``lead + batch``; marks follow exactly the audio before them; ``clear`` overtakes
what is queued; the close comes last.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from aicallerd.call.player import FRAME_BYTES, Player
from aicallerd.twilio import media

LEAD = 0.08
BATCH = 0.1
EPS = 1e-6


def audio(seconds: float, fill: int = 0x55) -> bytes:
    return bytes([fill]) * round(seconds * 8000)


@dataclass
class Sent:
    t: float
    event: media.OutboundMessage


@dataclass
class Socket:
    """The socket as Twilio would read it: every message, parsed, with its send time."""

    sent: list[Sent] = field(default_factory=list)
    closed_at: float | None = None

    async def receive(self) -> str | bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, data: str) -> None:
        self.sent.append(Sent(trio.current_time(), media.parse_outbound(data)))

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_at = trio.current_time()

    def media(self) -> list[Sent]:
        return [s for s in self.sent if isinstance(s.event, media.OutMedia)]

    def audio(self) -> bytes:
        return b"".join(s.event.payload for s in self.media())  # type: ignore[union-attr]

    def kinds(self) -> list[str]:
        return [type(s.event).__name__ for s in self.sent]


def play(
    script: Callable[[Player], Awaitable[None]], *, lead: float = LEAD, batch: float = BATCH
) -> Socket:
    """Run a Player against ``script`` on a MockClock starting at t=0, until it closes."""
    sock = Socket()

    async def main() -> None:
        player = Player(sock, lead=lead, batch=batch, stream_sid="MZ1")
        async with trio.open_nursery() as nursery:
            await nursery.start(player.run)
            await script(player)
            player.close(1000, "done")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sock


def buffer_levels(sent: list[Sent]) -> list[tuple[float, float]]:
    """Twilio's buffer (seconds queued) just before and just after each media message."""
    end = 0.0
    levels = []
    for s in sent:
        if isinstance(s.event, media.OutMedia):
            before = max(0.0, end - s.t)
            end = max(end, s.t) + len(s.event.payload) / 8000
            levels.append((before, end - s.t))
    return levels


def test_a_lone_first_frame_goes_out_at_once() -> None:
    heard_at: list[float] = []

    async def script(player: Player) -> None:
        await trio.sleep(1.0)
        player.enqueue_audio(audio(0.02), on_sent=heard_at.append)

    sock = play(script)
    assert [(s.t, len(s.event.payload)) for s in sock.media()] == [(1.0, FRAME_BYTES)]  # type: ignore[union-attr]
    assert heard_at == [1.0]


def test_queued_audio_is_coalesced_up_to_the_bound() -> None:
    reply = bytes(range(256)) * 63  # 2.016 s, distinct bytes so order shows

    async def script(player: Player) -> None:
        player.enqueue_audio(reply)

    sock = play(script)
    sizes = [len(s.event.payload) for s in sock.media()]  # type: ignore[union-attr]
    assert sock.audio() == reply
    # The first message fills Twilio's buffer to lead + batch at once; then one batch per
    # batch-long interval, instead of a message per 20 ms frame.
    assert sizes[0] == round((LEAD + BATCH) * 8000)
    assert set(sizes[1:-1]) == {round(BATCH * 8000)}
    assert len(sizes) <= 2.016 / BATCH
    times = [s.t for s in sock.media()]
    assert times[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert gaps == pytest.approx([BATCH] * len(gaps))


@pytest.mark.parametrize(("lead", "batch"), [(0.08, 0.1), (0.2, 0.1), (0.08, 0.2), (0.08, 0.02)])
def test_twilio_buffer_never_runs_dry_nor_holds_more_than_lead_plus_batch(
    lead: float, batch: float
) -> None:
    async def script(player: Player) -> None:
        # A sentence, more audio arriving while it plays, a sentence after a pause.
        player.enqueue_audio(audio(0.73))
        player.enqueue_mark("s1")
        await trio.sleep(0.31)
        player.enqueue_audio(audio(0.5))
        player.enqueue_mark("s2")
        await trio.sleep(3.0)
        player.enqueue_audio(audio(1.0))

    sock = play(script, lead=lead, batch=batch)
    levels = buffer_levels(sock.sent)
    assert len(sock.audio()) == round(2.23 * 8000)
    assert max(after for _, after in levels) <= lead + batch + EPS
    # Inside a run of audio each message arrives while at least `lead` is still queued:
    # only the first of each reply finds the buffer empty.
    idle = [before for before, _ in levels if before < lead - EPS]
    assert idle == [0.0, 0.0]


def test_per_frame_batches_send_fifty_messages_a_second() -> None:
    async def script(player: Player) -> None:
        player.enqueue_audio(audio(1.0))

    per_frame = play(script, batch=0.02).media()
    coalesced = play(script).media()
    assert len(per_frame) == 50 - round(LEAD / 0.02)  # the first tops up the lead at once
    assert len(coalesced) == 1 + math.ceil((1.0 - LEAD - BATCH) / BATCH - EPS)


def test_a_slow_engine_chunks_go_out_as_they_come() -> None:
    """Audio made no faster than it plays is never held back to fill a message."""
    arrived: list[float] = []

    async def script(player: Player) -> None:
        for _ in range(10):
            arrived.append(trio.current_time())
            player.enqueue_audio(audio(0.02))
            await trio.sleep(0.025)

    sock = play(script)
    assert [s.t for s in sock.media()] == arrived


def test_marks_follow_exactly_the_audio_before_them() -> None:
    async def script(player: Player) -> None:
        player.enqueue_audio(audio(0.33, 1))
        player.enqueue_mark("s1")
        player.enqueue_audio(audio(0.05, 2))
        player.enqueue_mark("s2")
        player.enqueue_audio(audio(0.2, 3))
        player.enqueue_mark("s3")

    sock = play(script)
    seen = bytearray()
    marks = []
    for s in sock.sent:
        if isinstance(s.event, media.OutMedia):
            assert len(set(s.event.payload)) == 1  # no message runs past a mark
            seen += s.event.payload
        elif isinstance(s.event, media.OutMark):
            marks.append((s.event.name, len(seen), s.t))
    assert [(name, n) for name, n, _ in marks] == [("s1", 2640), ("s2", 3040), ("s3", 4640)]
    assert sock.kinds()[-1] == "OutMark"
    # A mark leaves with the audio it follows, not once that audio has played.
    last_audio_t = {1: 0.0, 2: 0.0, 3: 0.0}
    for s in sock.media():
        last_audio_t[s.event.payload[0]] = s.t  # type: ignore[union-attr]
    assert [t for _, _, t in marks] == [last_audio_t[1], last_audio_t[2], last_audio_t[3]]


def test_clear_goes_first_and_drops_what_is_queued() -> None:
    dropped: list[list[str]] = []

    async def script(player: Player) -> None:
        player.enqueue_audio(audio(1.0))
        player.enqueue_mark("s1")
        player.enqueue_audio(audio(1.0))
        player.enqueue_mark("s2")
        await trio.sleep(0.5)
        dropped.append(player.clear())
        assert not player.speaking

    sock = play(script)
    kinds = sock.kinds()
    assert kinds[-1] == "OutClear" and kinds.count("OutClear") == 1
    clear_t = sock.sent[-1].t
    assert clear_t == 0.5
    # What Twilio had to throw away is at most lead + batch.
    sent_seconds = len(sock.audio()) / 8000
    assert clear_t < sent_seconds <= clear_t + LEAD + BATCH + EPS
    assert dropped == [["s1", "s2"]]


def test_a_clear_overtaking_a_send_is_not_counted_as_queued() -> None:
    """The clock must not believe Twilio still plays audio the following clear emptied."""

    class SlowSocket(Socket):
        async def send(self, data: str) -> None:
            await trio.sleep(0.01)
            await super().send(data)

    sock = SlowSocket()
    speaking_after: list[bool] = []

    async def main() -> None:
        player = Player(sock, lead=LEAD, batch=BATCH)
        async with trio.open_nursery() as nursery:
            await nursery.start(player.run)
            player.enqueue_audio(audio(1.0))
            await trio.sleep(0.005)  # the first message is on its way
            player.clear()
            await trio.sleep(0.05)
            speaking_after.append(player.speaking)
            player.close(1000, "done")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sock.kinds() == ["OutMedia", "OutClear"]
    assert speaking_after == [False]


def test_close_comes_after_everything_queued() -> None:
    async def script(player: Player) -> None:
        player.enqueue_audio(audio(0.5))
        player.enqueue_mark("bye")

    sock = play(script)
    assert sock.kinds()[-1] == "OutMark"
    assert len(sock.audio()) == 4000
    assert sock.closed_at is not None and sock.closed_at >= sock.sent[-1].t


def test_each_chunk_learns_when_its_first_byte_left() -> None:
    """Voice-to-voice latency is read from ``on_sent``: a chunk riding in the middle of a
    message, or starting after a partly sent one, reports that message's send time."""
    sent_at: dict[str, float] = {}

    def note(name: str) -> Callable[[float], None]:
        return lambda t: sent_at.setdefault(name, t)

    async def script(player: Player) -> None:
        player.enqueue_audio(audio(0.1), note("a"))  # with b's start in the first message
        player.enqueue_audio(audio(0.5), note("b"))
        player.enqueue_audio(audio(0.1), note("c"))  # after b's tail, 0.6 s later

    sock = play(script)
    assert sent_at["a"] == sent_at["b"] == 0.0
    # c's first byte is byte 4800 of the stream: the message that carried it is its time.
    end = 0
    for s in sock.media():
        end += len(s.event.payload)  # type: ignore[union-attr]
        if end > 4800:
            break
    assert end - len(s.event.payload) < 4800 < end  # type: ignore[union-attr]  # mid-message
    assert sent_at["c"] == s.t == pytest.approx(0.5)


def test_a_sender_woken_late_grows_its_lead_so_the_buffer_does_not_run_dry_again() -> None:
    """A stall longer than the lead (a busy loop, a slow write) drains Twilio's buffer once;
    after it the lead is twice the stall, so a second stall like it goes unheard."""
    stalls = [3, 12]  # the media messages after which the sender loses 250 ms

    class StallingSocket(Socket):
        async def send(self, data: str) -> None:
            await super().send(data)
            if len(self.media()) in stalls:
                trio.lowlevel.current_clock().jump(0.25)  # type: ignore[attr-defined]

    sock = StallingSocket()

    async def main() -> None:
        player = Player(sock, lead=LEAD, batch=BATCH, stream_sid="MZ1")
        async with trio.open_nursery() as nursery:
            await nursery.start(player.run)
            player.enqueue_audio(audio(3.0))
            await trio.sleep(4.0)
            assert player.clock.lead == pytest.approx(0.3)
            player.close(1000, "done")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(sock.audio()) == 3.0 * 8000
    dry = [before for before, _ in buffer_levels(sock.sent)[1:] if before == 0.0]
    assert len(dry) == 1  # the first stall only
