"""Whisper on a window sized to the phrase instead of the fixed 30 s.

faster-whisper pads every input to Whisper's 30 s window, so a 2 s phrase costs the encoder
as much as 30 s of speech: about 0.4 s of tiny.en's 0.6 s on two cores. CTranslate2's
encoder accepts shorter inputs, and the cost falls with the window (8 s: about 0.1 s).
Too short a window hurts accuracy (Whisper was trained on 30 s, and a window barely longer
than the speech makes it garble and repeat), so the phrase gets at least ``PAD_SECONDS`` of
silence after it and the window is at least ``MIN_WINDOW_SECONDS``. On 90 espeak-ng phrases
through the mu-law line this scored 47.5 % word errors against 46.6 % for the 30 s window,
at about a third of the time (tiny.en is poor on synthetic voices; the gap is what counts).
A minimum of 6 s rather than 10 (2026-12-01, 2.0 GHz host, one thread): 30 new phone
sentences in two espeak-ng voices 23.1 % word errors against 23.8 % (the full window 24.6 %),
12 one-to-three-word answers 25 % against 30 %, the bench's 12 utterances 7.6 % against
8.5 %, at 304 against 444 ms per phrase (the full window: 1652).
A decode that loops anyway is the repeated phrase said once when it is nothing else
(`said_once`), else is tried again on twice the window before the full one: 24 one-word
answers took 238 ms p50 / 1986 ms p95 before, 234 / 347 after, with the same word errors.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

import numpy as np

WHISPER_RATE = 16000
FULL_WINDOW_SECONDS = 30
MIN_WINDOW_SECONDS = 6
PAD_SECONDS = 3.0
FRAMES_PER_SECOND = 100  # Whisper's mel hop is 10 ms
# faster-whisper's own defaults for dropping a segment that is really silence, and for a
# decode that ran into a loop ("4, 4, 4, 4, ...": zlib squeezes it more than 2.4x).
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
_NOT_WORD = re.compile(r"[^\w']")
_SAME_WORD = re.compile(r"\b(\w+)\b(?:\W+\1\b){7,}", re.IGNORECASE)  # 8 times in a row


def window_seconds(audio_seconds: float) -> int | None:
    """The encoder window for a phrase of ``audio_seconds``; None when only the full 30 s
    window (with faster-whisper's own seeking over longer audio) will do."""
    window = max(MIN_WINDOW_SECONDS, math.ceil(audio_seconds + PAD_SECONDS))
    return None if window >= FULL_WINDOW_SECONDS else window


class WindowedDecoder:
    """Greedy or beam decoding of one short phrase with a loaded ``WhisperModel``.

    The prompt and the suppressed tokens are what faster-whisper's ``transcribe`` uses for
    ``without_timestamps=True`` with a fixed language, built once.
    """

    def __init__(self, whisper: Any, language: str, beam_size: int = 1) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._whisper = whisper
        self._beam_size = beam_size
        self._tokenizer = Tokenizer(
            whisper.hf_tokenizer,
            whisper.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))

    def decode(self, audio16: np.ndarray, window: int, max_new_tokens: int) -> str | None:
        """Transcribe float32 16 kHz ``audio16`` (shorter than ``window`` seconds); None when
        the short window made Whisper loop (digits and spelled letters do that most), so the
        caller should transcribe on the full window instead."""
        frames = window * FRAMES_PER_SECOND
        pad = max(0, window * WHISPER_RATE - audio16.size)
        features = self._whisper.feature_extractor(audio16, padding=pad)[:, :frames]
        encoded = self._whisper.encode(features)
        result = self._whisper.model.generate(
            encoded,
            [self._prompt],
            beam_size=self._beam_size,
            max_length=len(self._prompt) + max_new_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD:
            return ""
        text = self._tokenizer.decode(tokens).strip()
        if len(tokens) >= max_new_tokens or looped(text):
            return said_once(text)
        return text


def said_once(text: str) -> str | None:
    """The phrase a looping decode repeats, when the text is nothing but that phrase over and
    over (the last copy may be cut off by the token cap); else None.

    Seconds of silence after a one-word answer often make Whisper write the word until its
    cap: "tomorrow tomorrow tomorrow ...", "Right. Right. Right. Ri", in 8 of 24 one-word
    answers on the 6 s window (two espeak-ng voices), which then cost the full window's
    1.7 s instead of 0.3. Digits and single letters are not collapsed: "5 5 5 5" may be
    a real number, or a loop hiding the digits that followed.
    """
    words = text.split()
    keys = [_NOT_WORD.sub("", w.lower()) for w in words]
    for period in range(1, len(words) // 2 + 1):
        unit = keys[:period]
        whole = all(keys[i] == unit[i % period] for i in range(len(keys) - 1))
        if whole and unit[(len(keys) - 1) % period].startswith(keys[-1]):
            if any(c.isdigit() for c in text) or all(len(k) <= 1 for k in unit):
                return None
            return " ".join(words[:period]).rstrip(",")
    return None


def looped(text: str) -> bool:
    """Whisper stuck on a word ("4, 4, 4, ...") or a phrase: too short for zlib to see it."""
    return bool(_SAME_WORD.search(text)) or _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
