"""Turn-taking for one caller: a sans-I/O state machine, (frame, VAD prob, time) -> events.

Modelled on the seed's AudioChunk / PhraseObject split: an utterance ("phrase") is cut into
chunks at short pauses so each chunk can be transcribed while the caller is still talking; at the
end of the turn only the last chunk (often none) is left to transcribe.

Event timeline for "word ... word" with a short pause::

    SpeechStart  ChunkReady(0) Pause   Resume   ChunkReady(1) Pause   PhraseEnd
    |--speech--|...0.3 s...|           |--speech--|...0.3 s...|...0.3 s...|

- A frame is speech only if the VAD says so *and* its RMS clears the gate (the seed's gate keeps
  faint line noise the model likes from opening phrases).
- A phrase starts after `min_speech_start_seconds` of consecutive speech, so clicks do nothing.
- In-phrase silence of `chunk_silence_seconds` emits `Pause` (the speculative-turn hook) and cuts
  the chunk there, unless the chunk holds less than `min_chunk_seconds` of speech, in which case it
  is merged into the next one. After a Pause, speech must again last `min_speech_start_seconds`
  to count (`Resume`), so a cough does not cancel a speculative turn.
- A chunk is cut a little (`chunk_tail_seconds`) after its last speech, because long trailing
  silence makes Whisper hallucinate; it starts `lead_in_seconds` before its speech (pre-roll ring
  buffer) so the first phoneme is not clipped; it never exceeds `max_chunk_seconds`.
- Silence of `done_speaking_silence_seconds` ends the phrase: any pending chunk goes out with
  ``final=True``, then `PhraseEnd`. Whoever knows the words so far may change that pause for
  the current stretch of the phrase (:meth:`Endpointer.set_turn_silence`: shorter after a
  complete question, longer while a number is read out); it is back to the default at the
  next phrase and whenever the caller resumes after a pause.

Times are audio seconds since the stream started (Twilio media timestamps). `SpeechStart.t` and
`Resume.t` are speech onsets; `Pause.t` and `PhraseEnd.t` are when the silence reached the
threshold (exact, independent of framing; the event is returned by the frame that crosses it).
Gaps in the timestamps count as silence.
"""

from dataclasses import dataclass

import numpy as np

from aicallerd.audio.resample import rms
from aicallerd.configschema import TurnConfig

SAMPLE_RATE = 8000
_EPS = 1e-6  # far below one sample (125 us): absorbs float error in summed frame times
_GAP_FILL_LIMIT_SECONDS = 10.0
MAX_ONSET_BACKDATE = 0.1  # seconds: loud frames before a VAD onset that count as its speech
_INT16 = np.dtype(np.int16)


_TURN = TurnConfig()  # the configuration's defaults are the endpointer's, written once


@dataclass(frozen=True)
class EndpointerSettings:
    """Tunables; the defaults are the shipped configuration's ([turn] in etc/aicaller.conf)."""

    vad_threshold: float = _TURN.vad_threshold
    min_speech_rms_threshold: float = _TURN.min_speech_rms_threshold
    chunk_silence_seconds: float = _TURN.chunk_silence_seconds
    done_speaking_silence_seconds: float = _TURN.done_speaking_silence_seconds
    min_chunk_seconds: float = _TURN.min_chunk_seconds
    max_chunk_seconds: float = _TURN.max_chunk_seconds
    lead_in_seconds: float = _TURN.lead_in_seconds
    min_speech_start_seconds: float = 0.04
    frame_seconds: float = 0.02
    chunk_tail_seconds: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "chunk_silence_seconds",
            "done_speaking_silence_seconds",
            "max_chunk_seconds",
            "frame_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in (
            "min_chunk_seconds",
            "lead_in_seconds",
            "min_speech_start_seconds",
            "chunk_tail_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_chunk_seconds <= self.lead_in_seconds:
            raise ValueError("max_chunk_seconds must exceed lead_in_seconds")


@dataclass(frozen=True)
class SpeechStart:
    """``t``: the onset the VAD confirmed. ``loud_t``: when the frames leading into it first
    cleared the RMS gate, if earlier (at most ``MAX_ONSET_BACKDATE`` before ``t``): the VAD
    is 20-80 ms slower than the energy to be sure of a soft onset ("yes", "how", "please"),
    and how long the caller has spoken counts from the sound, not from our certainty."""

    phrase_id: int
    t: float
    loud_t: float | None = None

    @property
    def onset(self) -> float:
        return self.t if self.loud_t is None else self.loud_t


@dataclass(frozen=True, eq=False)
class ChunkReady:
    """Audio to transcribe now; `index` counts from 0 within the phrase."""

    phrase_id: int
    index: int
    pcm8: np.ndarray
    start_t: float
    end_t: float
    final: bool = False

    @property
    def duration(self) -> float:
        return len(self.pcm8) / SAMPLE_RATE


@dataclass(frozen=True)
class Pause:
    """`pending_pcm8`: the short chunk held back for merging (None if it was cut), so a
    speculative turn can transcribe everything said so far."""

    phrase_id: int
    t: float
    silence_started_t: float
    pending_pcm8: np.ndarray | None = None


@dataclass(frozen=True)
class Resume:
    phrase_id: int
    t: float


@dataclass(frozen=True)
class PhraseEnd:
    """All `chunks` ChunkReady events of the phrase have been emitted before this one."""

    phrase_id: int
    chunks: int
    speech_end_t: float
    t: float


Event = SpeechStart | ChunkReady | Pause | Resume | PhraseEnd


def _samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


class PreRoll:
    """The last ``keep + n`` samples heard (``n``: the last push), written in place.

    Every frame of every call passes through here, so a push is one slice assignment into a
    preallocated array twice the window; the window is moved to the front when the end is
    reached (one copy per window's worth of frames), so :meth:`recent` is always contiguous.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._buf = np.zeros(2 * keep + 320, dtype=np.int16)
        self._size = len(self._buf)
        self._end = 0  # samples held end at _buf[_end]
        self._last = 0  # length of the last push

    def push(self, x: np.ndarray) -> None:
        n = len(x)
        end = self._end
        if end + n > self._size:
            end = self._make_room(n)
        self._buf[end : end + n] = x
        self._end = end + n
        self._last = n

    def _make_room(self, n: int) -> int:
        """Move the last ``keep`` samples to the front (growing for an unusually long frame)."""
        end = self._end
        keep = min(end, self.keep)
        tail = self._buf[end - keep : end]
        if keep + n > self._size // 2:
            self._buf = np.zeros(2 * (keep + n), dtype=np.int16)
            self._size = len(self._buf)
        self._buf[:keep] = tail
        return keep

    def recent(self) -> np.ndarray:
        """The window, oldest first: a view, valid until the next push."""
        end = self._end
        return self._buf[end - min(end, self.keep + self._last) : end]

    def clear(self) -> None:
        self._end = self._last = 0


class GrowingBuffer:
    """Audio of the open chunk: appended in place, doubling when full (no quadratic joins)."""

    def __init__(self, first: np.ndarray, capacity: int) -> None:
        self._buf = np.empty(max(capacity, 2 * len(first)), dtype=np.int16)
        self._buf[: len(first)] = first
        self.len = len(first)

    def append(self, x: np.ndarray) -> None:
        n, size = len(x), self.len
        if size + n > len(self._buf):
            grown = np.empty(2 * (size + n), dtype=np.int16)
            grown[:size] = self._buf[:size]
            self._buf = grown
        self._buf[size : size + n] = x
        self.len = size + n

    def view(self) -> np.ndarray:
        """Everything appended so far: a view, valid until the next append."""
        return self._buf[: self.len]


class Endpointer:
    """Feed every inbound frame in order; act on the returned events."""

    def __init__(self, settings: EndpointerSettings | None = None) -> None:
        self.settings = s = settings if settings is not None else EndpointerSettings()
        self._start_run = _samples(s.min_speech_start_seconds)
        self._max_chunk = _samples(s.max_chunk_seconds)
        self._tail = _samples(s.chunk_tail_seconds)
        # Room for a chunk cut at its longest plus its tail, so a chunk rarely has to grow.
        self._chunk_capacity = self._max_chunk + 2 * _samples(s.frame_seconds) + self._tail
        self._ring = PreRoll(_samples(s.lead_in_seconds + s.min_speech_start_seconds) + 1)
        self._vad_threshold = s.vad_threshold
        self._gate = s.min_speech_rms_threshold
        self._half_frame = s.frame_seconds / 2
        # The clock counts samples from the first frame's time, so frame times do not drift.
        self._origin_t: float | None = None
        self._stream_start_t: float | None = None
        self._n = 0
        self._floor_t = -np.inf  # no chunk reaches back before this (last chunk end / reset)
        self._phrase_id = 0
        self.last_speech_t: float | None = None
        self._loud_t: float | None = None  # start of the current run of frames above the gate
        self._clear_phrase()

    # ---- public state -------------------------------------------------------------------------

    @property
    def _end_t(self) -> float | None:
        """Audio time at the end of the last frame."""
        if self._origin_t is None:
            return None
        return self._origin_t + self._n / SAMPLE_RATE

    @property
    def speaking(self) -> bool:
        return self.in_phrase and self._silence_start_t is None

    @property
    def turn_silence(self) -> float:
        """The silence that ends the current phrase."""
        if self._turn_silence is None:
            return self.settings.done_speaking_silence_seconds
        return self._turn_silence

    def set_turn_silence(self, seconds: float | None) -> None:
        """End the current phrase after ``seconds`` of silence instead of the default (None).

        Holds until the caller resumes or the phrase ends. A silence already longer than
        ``seconds`` ends the phrase on the next frame. Never below ``chunk_silence_seconds``:
        the end of a turn follows its ``Pause``.
        """
        if seconds is not None and seconds <= self.settings.chunk_silence_seconds:
            raise ValueError("the turn silence must exceed chunk_silence_seconds")
        if self.in_phrase:
            self._turn_silence = seconds

    @property
    def silence_seconds(self) -> float:
        """Length of the current run of silence (0 while speaking)."""
        if self._end_t is None or self.speaking:
            return 0.0
        if self.in_phrase:
            assert self._silence_start_t is not None
            return self._silence_end() - self._silence_start_t
        since = self.last_speech_t if self.last_speech_t is not None else self._stream_start_t
        return self._end_t - (since if since is not None else self._end_t)

    def reset(self) -> None:
        """Drop the phrase in progress without events; later chunks never reuse earlier audio."""
        self._clear_phrase()
        if self._end_t is not None:
            self._floor_t = self._end_t

    def feed(
        self, pcm8: np.ndarray, speech_prob: float, t: float, level: float | None = None
    ) -> list[Event]:
        """Process one frame (any length) starting at audio time `t`; `level` is its RMS when
        the caller has it already."""
        # No copy: the audio is copied into the pre-roll and chunk buffers, so a caller may
        # reuse its buffer.
        x = pcm8
        if x.__class__ is not np.ndarray or x.dtype is not _INT16:
            x = np.asarray(x, _INT16)
        if x.ndim != 1:
            x = x.reshape(-1)
        n = len(x)
        if n == 0:
            return []
        events: list[Event] = []
        origin = self._origin_t
        if origin is None:
            self._origin_t = self._stream_start_t = origin = t
        elif t - (origin + self._n / SAMPLE_RATE) >= self._half_frame:
            self._fill_gap(t, events)
            origin = self._origin_t
            assert origin is not None
        if level is not None and level >= self._gate:
            if self._loud_t is None:
                self._loud_t = origin + self._n / SAMPLE_RATE
        else:
            self._loud_t = None
        is_speech = self._is_speech(x, speech_prob, level)
        if not is_speech and not self.in_phrase:  # the idle caller: what _process would do
            self._ring.push(x)
            self._n += n
            self._run_start_t, self._run_len = None, 0
            return events
        # Sub-frame jitter or overlap: keep the audio contiguous and trust our own clock.
        self._process(x, is_speech, origin + self._n / SAMPLE_RATE, events)
        return events

    # ---- internals ----------------------------------------------------------------------------

    def _is_speech(self, x: np.ndarray, speech_prob: float, level: float | None) -> bool:
        """The VAD says so and the RMS clears the gate (measured only when the VAD says so)."""
        if speech_prob < self._vad_threshold:
            return False
        return (rms(x) if level is None else level) >= self._gate

    def _clear_phrase(self) -> None:
        self.in_phrase = False
        self._chunks_emitted = 0
        self._chunk: GrowingBuffer | None = None  # open chunk audio (None: none open)
        self._chunk_start_t = 0.0
        self._chunk_speech_start_t = 0.0
        self._chunk_speech_end = 0  # samples into the open chunk where its last speech ends
        self._silence_start_t: float | None = None
        self._turn_silence: float | None = None  # set_turn_silence, for this stretch only
        self._paused = False
        self._run_start_t: float | None = None  # speech run not yet long enough to count
        self._run_len = 0

    def _fill_gap(self, target: float, events: list[Event]) -> None:
        """Lost frames are silence; feed them as such so timers and chunk audio stay aligned."""
        assert self._origin_t is not None
        self._loud_t = None
        end = self._origin_t + self._n / SAMPLE_RATE
        limit = end + max(_GAP_FILL_LIMIT_SECONDS, 2 * self.settings.done_speaking_silence_seconds)
        missing = _samples(min(target, limit) - end)
        step = _samples(self.settings.frame_seconds)
        for k in range(0, missing, step):
            t = self._origin_t + self._n / SAMPLE_RATE
            self._process(np.zeros(min(step, missing - k), dtype=np.int16), False, t, events)
        if target > limit:  # nothing can be pending after that much silence: jump the clock
            self._origin_t = target - self._n / SAMPLE_RATE
            self._ring.clear()

    def _silence_end(self) -> float:
        """While a post-Pause speech run is unconfirmed, the silence clock stands at its onset."""
        assert self._end_t is not None
        if self._paused and self._run_start_t is not None:
            return self._run_start_t
        return self._end_t

    def _process(self, x: np.ndarray, is_speech: bool, t: float, events: list[Event]) -> None:
        n = len(x)
        te = t + n / SAMPLE_RATE
        self._ring.push(x)
        self._n += n
        if self._chunk is not None:
            self._chunk.append(x)

        if is_speech:
            if self._run_start_t is None:
                self._run_start_t, self._run_len = t, 0
            self._run_len += n
        else:
            self._run_start_t, self._run_len = None, 0

        if not self.in_phrase:
            if is_speech and self._run_len >= self._start_run:
                self._start_phrase(te, events)
            return

        if self._silence_start_t is None:  # speaking
            if is_speech:
                self._on_speech(te, events)
            else:
                self._silence_start_t = t
                self._check_silence(te, events)
            return

        # In-phrase silence. Before a Pause any speech frame ends it (VAD flicker inside words);
        # after a Pause speech must last long enough to count, like a phrase start.
        if is_speech and (not self._paused or self._run_len >= self._start_run):
            onset = self._run_start_t if self._paused else t
            assert onset is not None
            if self._paused:
                events.append(Resume(self._phrase_id, onset))
                self._turn_silence = None
            self._silence_start_t = None
            self._paused = False
            if self._chunk is None:
                self._open_chunk(onset)
            self._on_speech(te, events)
        elif not is_speech:
            self._check_silence(te, events)

    def _start_phrase(self, te: float, events: list[Event]) -> None:
        assert self._run_start_t is not None
        self._phrase_id += 1
        self.in_phrase = True
        onset, loud = self._run_start_t, self._loud_t
        if loud is not None and loud < onset:
            loud = max(loud, onset - MAX_ONSET_BACKDATE)
        else:
            loud = None
        events.append(SpeechStart(self._phrase_id, onset, loud))
        self._open_chunk(self._run_start_t)
        self._on_speech(te, events)

    def _open_chunk(self, onset: float) -> None:
        """Start a chunk from the ring buffer: pre-roll before `onset`, never before the floor."""
        assert self._end_t is not None
        ring = self._ring.recent()
        ring_start_t = self._end_t - len(ring) / SAMPLE_RATE
        want = max(onset - self.settings.lead_in_seconds, self._floor_t)
        idx = min(max(0, round((want - ring_start_t) * SAMPLE_RATE)), len(ring))
        self._chunk = self._new_chunk(ring[idx:])
        self._chunk_start_t = ring_start_t + idx / SAMPLE_RATE
        self._chunk_speech_start_t = onset

    def _new_chunk(self, audio: np.ndarray) -> GrowingBuffer:
        """A chunk starting with (a copy of) ``audio``, with room for its longest cut."""
        return GrowingBuffer(audio, self._chunk_capacity)

    def _on_speech(self, te: float, events: list[Event]) -> None:
        self.last_speech_t = te
        assert self._chunk is not None
        self._chunk_speech_end = self._chunk.len
        while self._chunk.len > self._max_chunk:  # force cut mid-speech, remainder continues
            buf = self._chunk.view()
            cut_t = self._chunk_start_t + self._max_chunk / SAMPLE_RATE
            self._emit(buf[: self._max_chunk], final=False, events=events)
            self._chunk = self._new_chunk(buf[self._max_chunk :])
            self._chunk_start_t = cut_t
            self._chunk_speech_start_t = cut_t
            self._chunk_speech_end = self._chunk.len

    def _check_silence(self, now: float, events: list[Event]) -> None:
        s = self.settings
        assert self._silence_start_t is not None
        silence = now - self._silence_start_t
        if not self._paused and silence >= s.chunk_silence_seconds - _EPS:
            self._paused = True
            speech = self._silence_start_t - self._chunk_speech_start_t
            pending = None
            if self._chunk is not None and speech >= s.min_chunk_seconds - _EPS:
                self._cut_chunk(final=False, events=events)
            elif self._chunk is not None and self._chunk_speech_end > 0:
                buf = self._chunk.view()
                pending = buf[: min(len(buf), self._chunk_speech_end + self._tail)].copy()
            at = self._silence_start_t + s.chunk_silence_seconds
            events.append(Pause(self._phrase_id, at, self._silence_start_t, pending))
        if silence >= self.turn_silence - _EPS:
            if self._chunk is not None:
                self._cut_chunk(final=True, events=events)
            assert self.last_speech_t is not None
            at = self._silence_start_t + self.turn_silence
            events.append(PhraseEnd(self._phrase_id, self._chunks_emitted, self.last_speech_t, at))
            self._clear_phrase()

    def _cut_chunk(self, final: bool, events: list[Event]) -> None:
        """Emit the open chunk ending `chunk_tail_seconds` after its last speech."""
        assert self._chunk is not None
        buf = self._chunk.view()
        cut = min(len(buf), self._chunk_speech_end + self._tail, self._max_chunk)
        self._chunk = None
        if self._chunk_speech_end > 0:
            self._emit(buf[:cut], final=final, events=events)

    def _emit(self, pcm: np.ndarray, final: bool, events: list[Event]) -> None:
        end_t = self._chunk_start_t + len(pcm) / SAMPLE_RATE
        chunk = ChunkReady(
            self._phrase_id, self._chunks_emitted, pcm.copy(), self._chunk_start_t, end_t, final
        )
        events.append(chunk)
        self._chunks_emitted += 1
        self._floor_t = end_t
