"""VADs on real synthetic speech (espeak-ng, else Piper) and on things that are not speech."""

import os

import numpy as np
import pytest
from speech import espeak_available, speak

from aicallerd.audio.resample import rms
from aicallerd.endpointer import ChunkReady, Endpointer, EndpointerSettings, PhraseEnd
from aicallerd.vad import RmsVad, SileroVad, Upsampler2x, load_session, probabilities

SR = 8000
FRAME = 160
SENTENCE = "Hello, I would like to book a table for two people tonight."
ENGINES = [
    pytest.param(
        "espeak",
        marks=pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed"),
    ),
    "piper",
]


def frames(x: np.ndarray, n: int = FRAME) -> list[np.ndarray]:
    return [x[i : i + n] for i in range(0, len(x), n)]


def probs(x: np.ndarray, n: int = FRAME, vad: SileroVad | None = None) -> np.ndarray:
    vad = vad if vad is not None else SileroVad()
    return np.array([vad.probability(f) for f in frames(x, n)])


class RecordingSession:
    """The real onnxruntime session, recording each window's speech probability."""

    def __init__(self) -> None:
        self.inner = load_session()
        self.outputs: list[float] = []

    @property
    def runs(self) -> int:
        return len(self.outputs)

    def run(self, *args: object) -> list[np.ndarray]:
        out = self.inner.run(*args)
        self.outputs.append(float(np.asarray(out[0]).reshape(-1)[-1]))
        return out


def padded(x: np.ndarray, before: float = 0.5, after: float = 0.5) -> np.ndarray:
    z = np.zeros
    return np.concatenate([z(round(before * SR), np.int16), x, z(round(after * SR), np.int16)])


def test_telemetry_is_disabled_before_onnxruntime_loads() -> None:
    assert os.environ.get("ORT_DISABLE_TELEMETRY") == "1"


def test_model_is_the_16k_v6_window_model() -> None:
    session = load_session()
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert inputs["input"][-1] == 576 and inputs["h"] == [1, 1, 128]


@pytest.mark.parametrize("engine", ENGINES)
def test_speech_gets_high_probability_during_words(engine: str) -> None:
    x = padded(speak(SENTENCE, engine=engine))
    p = probs(x)
    loud = np.array([rms(f) for f in frames(x)]) > 500  # frames inside words
    assert loud.sum() > 50
    assert p[loud].mean() > 0.75
    assert (p[loud] >= 0.5).mean() > 0.85
    assert p[: round(0.4 * SR) // FRAME].max() < 0.2  # leading silence stays low


@pytest.mark.parametrize(
    "name, signal",
    [
        ("silence", np.zeros(2 * SR)),
        ("digital near-silence", np.random.default_rng(1).standard_normal(2 * SR) * 3),
        ("low white noise", np.random.default_rng(2).standard_normal(2 * SR) * 60),
        ("louder white noise", np.random.default_rng(3).standard_normal(2 * SR) * 600),
        ("1 kHz tone", 8000 * np.sin(2 * np.pi * 1000 * np.arange(2 * SR) / SR)),
    ],
)
def test_non_speech_gets_low_probability(name: str, signal: np.ndarray) -> None:
    p = probs(signal.astype(np.int16))
    assert p.max() < 0.3, name


@pytest.mark.parametrize("n", [80, 333])
def test_any_frame_length_tracks_the_same_windows(n: int) -> None:
    """The model sees the same 32 ms windows whatever the frame size Twilio sends."""
    x = padded(speak(SENTENCE))
    by_frame, by_n = RecordingSession(), RecordingSession()
    probs(x, FRAME, vad=SileroVad(session=by_frame))
    probs(x, n, vad=SileroVad(session=by_n))
    k = min(len(by_frame.outputs), len(by_n.outputs))
    assert k >= len(x) * 2 // 512 - 1
    np.testing.assert_allclose(by_frame.outputs[:k], by_n.outputs[:k], atol=1e-4)


def test_probability_holds_while_a_window_fills_and_reset_restarts() -> None:
    x = padded(speak(SENTENCE))
    vad = SileroVad()
    first = probs(x, vad=vad)
    vad.reset()
    again = probs(x, vad=vad)
    assert np.array_equal(first, again)
    assert vad.probability(np.zeros(0, dtype=np.int16)) == again[-1]
    # a 20 ms frame is 320 samples at 16 kHz: every 8 frames complete 5 windows, so some repeat
    assert np.sum(np.diff(first) == 0) >= len(first) // 4


def test_upsampler_is_seamless_across_frames() -> None:
    x = np.random.default_rng(4).standard_normal(4000).astype(np.float32)
    whole = Upsampler2x().process(x)
    up = Upsampler2x()
    pieces = np.concatenate([up.process(f) for f in frames(x, 333)])
    assert np.allclose(whole, pieces, atol=1e-6)
    tone = np.sin(2 * np.pi * 1000 * np.arange(4000) / SR).astype(np.float32)
    y = Upsampler2x().process(tone)[100:]
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(0.5), rel=0.01)


def test_mulaw_round_trip_still_speech() -> None:
    mulaw = pytest.importorskip("aicallerd.audio.mulaw")
    x = padded(speak(SENTENCE))
    y = mulaw.ulaw_decode(mulaw.ulaw_encode(x))
    p = probs(y)
    loud = np.array([rms(f) for f in frames(y)]) > 500
    assert (p[loud] >= 0.5).mean() > 0.85


def test_gated_vad_finds_the_same_phrases_and_skips_quiet_frames() -> None:
    """Frames below the RMS gate cost no inference, yet the endpointer hears the same
    two phrases: a silent or hissing call is nearly free."""
    a, b = speak("Hello there."), speak("I would like to book a table for tonight.")
    x = padded(np.concatenate([a, np.zeros(round(1.2 * SR), np.int16), b]), after=1.0)
    noise = np.random.default_rng(7).normal(0, 30, len(x))  # about -60 dBFS line hiss
    x = np.clip(x + noise, -32768, 32767).astype(np.int16)
    fs = frames(x)
    levels = [rms(f) for f in fs]
    counting = RecordingSession()
    ps = probabilities(SileroVad(session=counting), fs, levels, 200.0)
    ep = Endpointer(EndpointerSettings(min_speech_rms_threshold=200.0))
    events = []
    for i, (f, p, level) in enumerate(zip(fs, ps, levels, strict=True)):
        events += ep.feed(f, p, i * FRAME / SR, level)
    assert [e.phrase_id for e in events if isinstance(e, PhraseEnd)] == [1, 2]
    loud = sum(level >= 200.0 for level in levels)
    assert counting.runs <= loud  # one 32 ms window per 20 ms frame at most, loud ones only
    assert counting.runs < 0.8 * len(fs) * 20 / 32

    silent = SileroVad(session=(counting := RecordingSession()))
    zeros = [np.zeros(FRAME, np.int16)] * 250  # 5 s of digital silence
    assert probabilities(silent, zeros, [0.0] * 250, 200.0) == [0.0] * 250
    assert counting.runs == 0


def test_rms_vad() -> None:
    vad = RmsVad(threshold_rms=300)
    assert vad.probability(np.full(160, 300, dtype=np.int16)) == 1.0
    assert vad.probability(np.full(160, 299, dtype=np.int16)) == 0.0
    assert vad.probability(np.zeros(0, dtype=np.int16)) == 0.0
    assert vad.probability(np.full(160, -32768, dtype=np.int16)) == 1.0  # no int16 overflow
    vad.reset()


def test_silero_drives_the_endpointer_on_real_speech() -> None:
    """Two sentences 1.2 s apart are two phrases; every word lands inside a chunk."""
    a, b = speak("Hello there."), speak("I would like to book a table for tonight.")
    gap = np.zeros(round(1.2 * SR), np.int16)
    x = padded(np.concatenate([a, gap, b]), after=1.0)
    vad, ep = SileroVad(), Endpointer(EndpointerSettings())
    events = []
    for i, f in enumerate(frames(x)):
        events += ep.feed(f, vad.probability(f), i * FRAME / SR)
    ends = [e for e in events if isinstance(e, PhraseEnd)]
    assert [e.phrase_id for e in ends] == [1, 2]
    chunks = [e for e in events if isinstance(e, ChunkReady)]
    covered = np.zeros(len(x), bool)
    for c in chunks:
        covered[round(c.start_t * SR) : round(c.end_t * SR)] = True
    loud = np.abs(x.astype(np.int32)) > 2000
    assert covered[loud].mean() > 0.98
    assert ends[0].t < 0.5 + len(a) / SR + 0.8  # endpoint within ~0.6 s of the end of speech
