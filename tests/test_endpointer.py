"""Endpointer on synthetic, deterministic audio: speech is a voiced tone with soft edges over a
faint noise floor, and the VAD probability comes from a simple per-frame energy rule."""

import itertools
import random

import numpy as np
import pytest

from aicallerd.endpointer import (
    ChunkReady,
    Endpointer,
    EndpointerSettings,
    Event,
    Pause,
    PhraseEnd,
    Resume,
    SpeechStart,
)

SR = 8000
FRAME = 160
# The numbers these tests were written for (the shipped chunk pause is 0.2 s).
S = EndpointerSettings(chunk_silence_seconds=0.3)  # done 0.6, min chunk 0.5, lead-in 0.2


def word(seconds: float, amp: float = 3000.0) -> np.ndarray:
    n = round(seconds * SR)
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    x = x / np.sqrt(np.mean(x**2)) * amp
    ramp = min(40, n // 2)  # 5 ms edges: no clicks, but frames at the edges stay loud
    env = np.ones(n)
    env[:ramp] = np.linspace(0, 1, ramp)
    env[n - ramp :] = np.linspace(1, 0, ramp)
    return x * env


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR))


def audio(*parts: np.ndarray) -> np.ndarray:
    """Concatenate parts over a fixed low noise floor (RMS ~20, under the RMS gate)."""
    x = np.concatenate(parts)
    noise = np.random.default_rng(7).standard_normal(len(x)) * 20
    return np.clip(np.round(x + noise), -32768, 32767).astype(np.int16)


def energy_prob(frame: np.ndarray) -> float:
    return 1.0 if np.sqrt(np.mean(frame.astype(np.float64) ** 2)) > 400 else 0.0


def run(
    x: np.ndarray,
    frame: int = FRAME,
    settings: EndpointerSettings = S,
    prob=energy_prob,
    ep: Endpointer | None = None,
) -> list[Event]:
    ep = ep if ep is not None else Endpointer(settings)
    events: list[Event] = []
    for i in range(0, len(x), frame):
        f = x[i : i + frame]
        events += ep.feed(f, prob(f), i / SR)
    return events


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def of(events: list[Event], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def test_single_utterance() -> None:
    x = audio(silence(0.5), word(1.0), silence(1.0))
    ev = run(x)
    assert kinds(ev) == ["SpeechStart", "ChunkReady", "Pause", "PhraseEnd"]
    start, chunk, pause, end = ev
    assert start == SpeechStart(1, pytest.approx(0.5))
    assert pause == Pause(1, pytest.approx(1.8), pytest.approx(1.5))
    assert end == PhraseEnd(1, 1, pytest.approx(1.5), pytest.approx(1.5 + 0.6))
    # lead-in before the onset, a short tail after the last speech, the exact source samples
    assert (chunk.phrase_id, chunk.index, chunk.final) == (1, 0, False)
    assert chunk.start_t == pytest.approx(0.3)
    assert chunk.end_t == pytest.approx(1.6)
    assert np.array_equal(chunk.pcm8, x[round(0.3 * SR) : round(1.6 * SR)])
    assert chunk.pcm8.dtype == np.int16


def test_two_words_short_gap_two_chunks_with_pause_and_resume() -> None:
    x = audio(silence(0.5), word(0.6), silence(0.4), word(0.6), silence(1.0))
    ev = run(x)
    assert kinds(ev) == [
        "SpeechStart",
        "ChunkReady",
        "Pause",
        "Resume",
        "ChunkReady",
        "Pause",
        "PhraseEnd",
    ]
    c0, c1 = of(ev, ChunkReady)
    assert {e.phrase_id for e in ev} == {1}
    assert [c0.index, c1.index] == [0, 1]
    assert of(ev, Resume)[0].t == pytest.approx(1.5)
    assert c1.start_t == pytest.approx(1.5 - 0.2)
    assert c1.end_t == pytest.approx(2.1 + 0.1)
    end = of(ev, PhraseEnd)[0]
    assert (end.chunks, end.speech_end_t, end.t) == (2, pytest.approx(2.1), pytest.approx(2.7))


def test_next_chunk_lead_in_never_overlaps_previous_chunk() -> None:
    settings = EndpointerSettings(lead_in_seconds=0.3)
    x = audio(silence(0.5), word(0.6), silence(0.34), word(0.6), silence(1.0))
    c0, c1 = of(run(x, settings=settings), ChunkReady)
    assert c0.end_t == pytest.approx(1.2)
    assert c1.start_t == pytest.approx(c0.end_t)


def test_long_gap_makes_two_phrases() -> None:
    x = audio(silence(0.5), word(0.6), silence(1.0), word(0.6), silence(1.0))
    ev = run(x)
    assert kinds(ev) == ["SpeechStart", "ChunkReady", "Pause", "PhraseEnd"] * 2
    assert [e.phrase_id for e in of(ev, SpeechStart)] == [1, 2]
    assert [e.index for e in of(ev, ChunkReady)] == [0, 0]
    assert [e.t for e in of(ev, SpeechStart)] == [pytest.approx(0.5), pytest.approx(2.1)]


@pytest.mark.parametrize("frame", [80, 160])
def test_click_does_nothing(frame: int) -> None:
    x = audio(silence(0.5), word(0.02, amp=8000), silence(1.0))
    assert run(x, frame=frame) == []


def test_quiet_speech_below_rms_gate_does_nothing() -> None:
    x = audio(silence(0.5), word(1.0, amp=100), silence(1.0))
    assert run(x, prob=lambda f: 1.0) == []


def test_low_vad_probability_does_nothing() -> None:
    x = audio(silence(0.5), word(1.0), silence(1.0))
    assert run(x, prob=lambda f: 0.49) == []


def test_long_speech_is_force_cut_at_max_chunk() -> None:
    settings = EndpointerSettings(max_chunk_seconds=2.0)
    x = audio(silence(0.5), word(4.5), silence(1.0))
    ev = run(x, settings=settings)
    chunks = of(ev, ChunkReady)
    assert [round(c.duration, 4) for c in chunks] == [2.0, 2.0, 0.8]
    assert chunks[0].start_t == pytest.approx(0.3)
    for a, b in itertools.pairwise(chunks):
        assert b.start_t == pytest.approx(a.end_t)
    joined = np.concatenate([c.pcm8 for c in chunks])
    assert np.array_equal(joined, x[round(0.3 * SR) : round(5.1 * SR)])
    assert of(ev, PhraseEnd)[0].chunks == 3
    assert kinds(ev).count("Pause") == 1


def test_lead_in_is_clipped_at_stream_start() -> None:
    x = audio(silence(0.1), word(0.6), silence(1.0))
    chunk = of(run(x), ChunkReady)[0]
    assert chunk.start_t == pytest.approx(0.0)
    assert np.array_equal(chunk.pcm8[:FRAME], x[:FRAME])


def test_short_chunk_is_merged_into_the_next() -> None:
    x = audio(silence(0.5), word(0.26), silence(0.4), word(0.8), silence(1.0))
    ev = run(x)
    assert kinds(ev) == ["SpeechStart", "Pause", "Resume", "ChunkReady", "Pause", "PhraseEnd"]
    (chunk,) = of(ev, ChunkReady)
    assert chunk.start_t == pytest.approx(0.3)
    assert chunk.end_t == pytest.approx(1.96 + 0.1)


def test_short_phrase_goes_out_final_with_phrase_end() -> None:
    x = audio(silence(0.5), word(0.3), silence(1.0))
    ev = run(x)
    assert kinds(ev) == ["SpeechStart", "Pause", "ChunkReady", "PhraseEnd"]
    chunk = of(ev, ChunkReady)[0]
    assert chunk.final
    assert chunk.end_t == pytest.approx(0.9)
    assert of(ev, PhraseEnd)[0] == PhraseEnd(1, 1, pytest.approx(0.8), pytest.approx(1.4))


def test_click_after_pause_does_not_resume() -> None:
    x = audio(silence(0.5), word(0.6), silence(0.46), word(0.02, amp=8000), silence(1.0))
    ev = run(x)
    assert kinds(ev) == ["SpeechStart", "ChunkReady", "Pause", "PhraseEnd"]
    assert of(ev, PhraseEnd)[0].t == pytest.approx(1.1 + 0.6)


def test_vad_flicker_inside_speech_is_not_a_pause() -> None:
    x = audio(silence(0.5), word(1.0), silence(1.0))
    n = [0]

    def flicker(f: np.ndarray) -> float:
        n[0] += 1
        return 0.0 if n[0] % 4 == 0 else energy_prob(f)

    assert kinds(run(x, prob=flicker)) == ["SpeechStart", "ChunkReady", "Pause", "PhraseEnd"]


def _signature(events: list[Event]) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, ChunkReady):
            out.append(("ChunkReady", e.phrase_id, e.index, e.final, e.start_t, e.end_t))
        elif isinstance(e, Pause):
            out.append(("Pause", e.phrase_id, e.t, e.silence_started_t))
        elif isinstance(e, PhraseEnd):
            out.append(("PhraseEnd", e.phrase_id, e.chunks, e.speech_end_t, e.t))
        else:
            out.append((type(e).__name__, e.phrase_id, e.t))
    return out


@pytest.mark.parametrize("frame", [80, 240, 333])
def test_odd_frame_sizes_give_the_same_events(frame: int) -> None:
    x = audio(
        silence(0.5),
        word(0.6),
        silence(0.4),
        word(0.26),
        silence(0.4),
        word(0.9),
        silence(1.2),
        word(0.7),
        silence(1.0),
    )
    ref = _signature(run(x, frame=FRAME))
    got = _signature(run(x, frame=frame))
    assert [r[:2] for r in ref] == [g[:2] for g in got]
    tol = max(frame, FRAME) / SR + 1e-9
    for r, g in zip(ref, got, strict=True):
        for a, b in zip(r[2:], g[2:], strict=True):
            assert a == pytest.approx(b, abs=tol)


def test_missing_frames_count_as_silence() -> None:
    x = audio(silence(0.5), word(1.0), silence(1.0))
    ep = Endpointer(S)
    events: list[Event] = []
    for i in range(0, len(x), FRAME):
        if 1.6 <= i / SR < 2.3:  # frames lost in transit
            continue
        f = x[i : i + FRAME]
        events += ep.feed(f, energy_prob(f), i / SR)
    assert kinds(events) == ["SpeechStart", "ChunkReady", "Pause", "PhraseEnd"]
    assert of(events, PhraseEnd)[0].t == pytest.approx(2.1)
    assert of(events, ChunkReady)[0].end_t == pytest.approx(1.6)


def test_state_properties_follow_the_phrase() -> None:
    x = audio(silence(0.5), word(1.0), silence(1.0))
    ep = Endpointer(S)
    seen = {}
    for i in range(0, len(x), FRAME):
        f = x[i : i + FRAME]
        ep.feed(f, energy_prob(f), i / SR)
        seen[round((i + FRAME) / SR, 2)] = (ep.in_phrase, ep.speaking, ep.silence_seconds)
    assert seen[0.5] == (False, False, pytest.approx(0.5))
    assert seen[1.0] == (True, True, 0.0)
    assert seen[1.7] == (True, False, pytest.approx(0.2))
    assert seen[2.1] == (False, False, pytest.approx(0.6))
    assert ep.last_speech_t == pytest.approx(1.5)


def test_reset_drops_the_phrase() -> None:
    x = audio(silence(0.5), word(2.0), silence(1.0))
    ep = Endpointer(S)
    events: list[Event] = []
    for i in range(0, len(x), FRAME):
        f = x[i : i + FRAME]
        if i == round(1.0 * SR):
            ep.reset()
            assert not ep.in_phrase
        events += ep.feed(f, energy_prob(f), i / SR)
    starts = of(events, SpeechStart)
    assert [s.phrase_id for s in starts] == [1, 2]
    assert starts[1].t == pytest.approx(1.0)
    assert [e.phrase_id for e in of(events, PhraseEnd)] == [2]
    chunk = of(events, ChunkReady)[0]
    assert (chunk.phrase_id, chunk.start_t) == (2, pytest.approx(1.0))


def test_empty_frame_is_ignored() -> None:
    assert Endpointer(S).feed(np.zeros(0, dtype=np.int16), 1.0, 0.0) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"chunk_silence_seconds": 0}, {"lead_in_seconds": -1}, {"max_chunk_seconds": 0.1}],
)
def test_invalid_settings_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EndpointerSettings(**kwargs)


# ---- a turn silence chosen from the words (set_turn_silence) ------------------------------------


def _until_pause(ep: Endpointer, x: np.ndarray) -> tuple[list[Event], int]:
    """Feed ``x`` up to and including the frame that returns the first Pause."""
    events: list[Event] = []
    for i in range(0, len(x), FRAME):
        f = x[i : i + FRAME]
        events += ep.feed(f, energy_prob(f), i / SR)
        if any(isinstance(e, Pause) for e in events):
            return events, i + FRAME
    raise AssertionError("no pause")


def _feed_from(ep: Endpointer, x: np.ndarray, start: int) -> list[tuple[float, Event]]:
    out: list[tuple[float, Event]] = []
    for i in range(start, len(x), FRAME):
        f = x[i : i + FRAME]
        out += [((i + FRAME) / SR, e) for e in ep.feed(f, energy_prob(f), i / SR)]
    return out


@pytest.mark.parametrize("seconds", [0.4, 1.8])
def test_turn_silence_set_at_the_pause_ends_the_phrase_then(seconds: float) -> None:
    """Shorter after a complete sentence, longer while a number is read out."""
    x = audio(word(1.0), silence(3.0))
    ep = Endpointer(S)
    _, at = _until_pause(ep, x)
    ep.set_turn_silence(seconds)
    ends = [(t, e) for t, e in _feed_from(ep, x, at) if isinstance(e, PhraseEnd)]
    assert len(ends) == 1
    t, end = ends[0]
    assert end.t == pytest.approx(1.0 + seconds, abs=0.01)
    assert t == pytest.approx(end.t, abs=0.021)


def test_turn_silence_already_passed_ends_the_phrase_on_the_next_frame() -> None:
    x = audio(word(1.0), silence(3.0))
    ep = Endpointer(S)
    _, at = _until_pause(ep, x)
    at += 8 * FRAME  # 0.16 s more silence: 0.46 s in all
    for i in range(at - 8 * FRAME, at, FRAME):
        assert not any(isinstance(e, PhraseEnd) for e in ep.feed(x[i : i + FRAME], 0.0, i / SR))
    ep.set_turn_silence(0.4)
    first = ep.feed(x[at : at + FRAME], 0.0, at / SR)
    assert [type(e) for e in first][-1] is PhraseEnd


def test_turn_silence_goes_back_to_the_default_when_the_caller_resumes() -> None:
    """The words that chose it are stale once the caller goes on."""
    x = audio(word(1.0), silence(0.4), word(0.6), silence(3.0))
    ep = Endpointer(S)
    _, at = _until_pause(ep, x)
    ep.set_turn_silence(1.8)
    events = _feed_from(ep, x, at)
    assert [type(e).__name__ for _, e in events if not isinstance(e, ChunkReady)] == [
        "Resume",
        "Pause",
        "PhraseEnd",
    ]
    end = events[-1][1]
    assert isinstance(end, PhraseEnd)
    assert end.t == pytest.approx(1.0 + 0.4 + 0.6 + S.done_speaking_silence_seconds, abs=0.03)
    assert ep.turn_silence == S.done_speaking_silence_seconds


def test_turn_silence_must_exceed_the_chunk_pause() -> None:
    ep = Endpointer(S)
    with pytest.raises(ValueError):
        ep.set_turn_silence(S.chunk_silence_seconds)


# ---- the per-frame buffers: same events as the straightforward ones -----------------------------


class _ConcatRing:
    """The pre-roll as first written: concatenate, keep the last ``keep + n`` samples."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._audio = np.zeros(0, dtype=np.int16)

    def push(self, x: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, x])[-(self.keep + len(x)) :]

    def recent(self) -> np.ndarray:
        return self._audio

    def clear(self) -> None:
        self._audio = np.zeros(0, dtype=np.int16)


class _ListChunk:
    """A chunk as a list of frames, joined whenever it is read."""

    def __init__(self, first: np.ndarray) -> None:
        self._frames = [first.copy()]

    @property
    def len(self) -> int:
        return sum(len(f) for f in self._frames)

    def append(self, x: np.ndarray) -> None:
        self._frames.append(x.copy())

    def view(self) -> np.ndarray:
        return np.concatenate(self._frames)


class _Reference(Endpointer):
    """The same turn-taking with the straightforward buffers and every frame copied and
    processed in full (no idle shortcut)."""

    def __init__(self, settings: EndpointerSettings) -> None:
        super().__init__(settings)
        self._ring = _ConcatRing(self._ring.keep)

    def _new_chunk(self, audio: np.ndarray) -> _ListChunk:  # type: ignore[override]
        return _ListChunk(audio)

    def feed(
        self, pcm8: np.ndarray, speech_prob: float, t: float, level: float | None = None
    ) -> list[Event]:
        x = np.array(pcm8, dtype=np.int16).reshape(-1)
        if len(x) == 0:
            return []
        events: list[Event] = []
        if self._end_t is None:
            self._origin_t = self._stream_start_t = t
        elif t - self._end_t >= self.settings.frame_seconds / 2:
            self._fill_gap(t, events)
        assert self._origin_t is not None
        t = self._origin_t + self._n / SR
        s = self.settings
        measured = level is not None
        level = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if level is None else level
        loud = level >= s.min_speech_rms_threshold
        if not (measured and loud):
            self._loud_t = None
        elif self._loud_t is None:
            self._loud_t = t
        is_speech = speech_prob >= s.vad_threshold and loud
        self._process(x, is_speech, t, events)
        return events


Step = tuple[np.ndarray, float, float, float | None, str | float | None]


def _random_call(seed: int, seconds: float, long_gaps: bool) -> list[Step]:
    """Words, silence, hiss and clicks in odd frame sizes, with lost frames, clock jitter,
    resets and turn silences: (frame, prob, t, level or None, action) per frame."""
    r = random.Random(seed)  # the stdlib generator: the same sequence on every numpy
    steps: list[Step] = []
    n = 0
    while n < seconds * SR:
        kind = r.choice(["word", "word", "silence", "hiss", "click"])
        length = {"word": r.uniform(0.02, 3.0), "silence": r.uniform(0, 1.5), "click": 0.02}
        end = n + round(length.get(kind, r.uniform(0.1, 1.0)) * SR)
        amp = r.choice([100.0, 1500.0, 6000.0])
        while n < end:
            size = r.choice([FRAME] * 8 + [80, 240, 333, 1])
            i = np.arange(n, n + size)
            x = 30 * np.sin(i * 1.7) + (
                amp * np.sin(2 * np.pi * 180 * i / SR) if kind in ("word", "click") else 0
            )
            if kind == "silence":
                x = np.zeros(size)
            f = np.round(x).astype(np.int16)
            level = float(np.sqrt(np.mean(f.astype(np.float64) ** 2)))
            prob = (0.9 if level > 400 else 0.1) if r.random() > 0.05 else r.random()
            t, action, u = n / SR, None, r.random()
            if u < 0.008:  # frames lost in transit (now and then for longer than a phrase)
                lost = round((12.0 if long_gaps and u < 0.001 else r.choice([0.05, 0.3, 0.7])) * SR)
                n, end, t = n + lost, end + lost, (n + lost) / SR
            elif u < 0.02:
                t += r.uniform(-0.004, 0.004)
            elif u < 0.022:
                action = "reset"
            elif u < 0.04:
                action = r.choice([0.4, 1.8, None])
            steps.append((f, prob, t, level if r.random() < 0.5 else None, action))
            n += size
    return steps


def _drive(ep: Endpointer, steps: list[Step], reuse: bool = False) -> list[Event]:
    """Feed the call; with ``reuse`` every frame comes in one buffer, scribbled on afterwards."""
    events: list[Event] = []
    buffer = np.zeros(400, dtype=np.int16)
    for f, prob, t, level, action in steps:
        if action == "reset":
            ep.reset()
        elif isinstance(action, float) and action > ep.settings.chunk_silence_seconds:
            ep.set_turn_silence(action)
        if reuse:
            buffer[: len(f)] = f
            f = buffer[: len(f)]
        events += ep.feed(f, prob, t, level)
        buffer[:] = 12345
    return events


def _exact(events: list[Event]) -> list[tuple]:
    """Every field of every event, audio as bytes: equal only if nothing differs at all."""
    out = []
    for e in events:
        fields = {
            k: (v.dtype.str, v.tobytes()) if isinstance(v, np.ndarray) else v
            for k, v in vars(e).items()
        }
        out.append((type(e).__name__, sorted(fields.items())))
    return out


@pytest.mark.parametrize(
    "settings",
    [
        EndpointerSettings(),
        S,
        EndpointerSettings(max_chunk_seconds=1.0, lead_in_seconds=0.3),
        EndpointerSettings(lead_in_seconds=0, min_speech_start_seconds=0, chunk_tail_seconds=0),
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_events_are_exactly_those_of_the_straightforward_buffers(
    settings: EndpointerSettings, seed: int
) -> None:
    steps = _random_call(seed, 40.0, long_gaps=True)
    want = _drive(_Reference(settings), steps)
    got = _drive(Endpointer(settings), steps, reuse=True)
    assert _exact(got) == _exact(want)
    assert {"SpeechStart", "ChunkReady", "Pause", "Resume", "PhraseEnd"} <= set(kinds(want))


@pytest.mark.parametrize("seed", [4, 5])
def test_chunks_are_the_audio_heard_with_lead_in_and_lost_frames_as_silence(seed: int) -> None:
    steps = [(f, p, t, lv, None) for f, p, t, lv, _ in _random_call(seed, 30.0, long_gaps=False)]
    heard: list[np.ndarray] = []
    n = 0
    for f, _, t, _, _ in steps:
        if t - n / SR >= S.frame_seconds / 2:  # what was lost is silence
            heard.append(np.zeros(round(t * SR) - n, dtype=np.int16))
            n = round(t * SR)
        heard.append(f)
        n += len(f)
    stream = np.concatenate(heard)
    events = _drive(Endpointer(S), steps)
    floor, onset, chunks = 0.0, None, 0
    for e in events:
        if isinstance(e, SpeechStart):
            onset = e.t
        elif isinstance(e, ChunkReady):
            chunks += 1
            assert np.array_equal(e.pcm8, stream[round(e.start_t * SR) : round(e.end_t * SR)])
            if e.index == 0:  # the pre-roll: lead_in before the onset, never into the last chunk
                assert onset is not None
                assert e.start_t == pytest.approx(max(onset - S.lead_in_seconds, floor))
            assert e.start_t >= floor - 1e-9
            floor = e.end_t
    assert chunks >= 5
