"""What a call reads from the configuration, frozen when the call starts (sans-I/O).

A reload swaps the daemon's configuration; a call in progress keeps the settings it
started with, so nothing changes under a caller's feet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from aicallerd.call.lines import TIME_LIMIT_LINE
from aicallerd.config import Config
from aicallerd.configschema import CallConfig, TurnConfig
from aicallerd.endpointer import EndpointerSettings

# Seconds of our audio Twilio holds before the next message (aicallerd.call.player).
DEFAULT_LEAD = 0.2


@dataclass(frozen=True)
class ReplySettings:
    max_tokens: int
    temperature: float
    max_sentences: int = 3
    max_words: int = CallConfig.max_reply_words
    clause_chars: int = 20  # a first clause this long is spoken before its sentence ends
    phrase_words: int = 4  # a first sentence is cut before a phrase after this many words
    later_phrase_words: int = 8  # and the rest of it again after this many
    # No voice gets a piece shorter than what it takes to make the next one. A cloud voice
    # answers each request after its first-byte delay (150-300 ms) whatever the length, and
    # Piper under four callers needs 0.3-0.5 s for the LLM's next words and their audio:
    # "Yes," or "Great!" (0.3-0.4 s of speech) alone left a gap after it, where joining it
    # to the next words cost only those words.
    interjection_chars: int = 0  # "Sure," alone first (0: never alone)
    min_piece_chars: int = 16  # shorter pieces join the next one


@dataclass(frozen=True)
class CallSettings:
    endpointer: EndpointerSettings
    reply: ReplySettings
    system_prompt: str
    greeting: str
    goodbye: str
    time_limit_line: str
    history_turns: int
    max_silence_seconds: float
    max_call_seconds: float
    barge_in: bool
    barge_in_min_speech_seconds: float
    barge_in_min_words: int
    barge_in_ignore_backchannels: bool
    speculative: bool
    store_audio_dir: Path | None
    first_audio_seconds: float = CallConfig.first_audio_seconds
    reply_seconds: float = CallConfig.reply_seconds
    transcribe_seconds: float = CallConfig.transcribe_seconds
    handshake_timeout: float = 10.0
    player_lead: float = DEFAULT_LEAD
    # Twilio sends a frame every 20 ms, silence included, and reads what we send: a stream
    # quiet (or not reading) this long is a dead or hostile peer, and the call ends.
    media_timeout: float = 5.0
    farewell: str = CallConfig.farewell
    hold_line: str = CallConfig.hold_line
    dtmf: str = CallConfig.dtmf
    dtmf_pause_seconds: float = CallConfig.dtmf_pause_seconds
    end_of_turn: str = TurnConfig.end_of_turn
    complete_silence_seconds: float = TurnConfig.complete_silence_seconds
    unfinished_silence_seconds: float = TurnConfig.unfinished_silence_seconds


def seconds_or_inf(value: float) -> float:
    """0 in the config means 'no limit'."""
    return math.inf if value <= 0 else value


def call_settings(cfg: Config) -> CallSettings:
    turn = cfg.turn
    return CallSettings(
        endpointer=EndpointerSettings(
            vad_threshold=turn.vad_threshold if turn.vad == "silero" else 0.5,
            min_speech_rms_threshold=turn.min_speech_rms_threshold,
            chunk_silence_seconds=turn.chunk_silence_seconds,
            done_speaking_silence_seconds=turn.done_speaking_silence_seconds,
            min_chunk_seconds=turn.min_chunk_seconds,
            max_chunk_seconds=turn.max_chunk_seconds,
            lead_in_seconds=turn.lead_in_seconds,
        ),
        reply=ReplySettings(
            max_tokens=cfg.llm.max_tokens,
            temperature=cfg.llm.temperature,
            max_words=cfg.call.max_reply_words,
        ),
        system_prompt=cfg.llm.system_prompt,
        greeting=cfg.call.greeting,
        goodbye=cfg.call.goodbye,
        time_limit_line=TIME_LIMIT_LINE,
        history_turns=cfg.llm.history_turns,
        max_silence_seconds=seconds_or_inf(cfg.call.max_silence_seconds),
        max_call_seconds=seconds_or_inf(cfg.call.max_call_seconds),
        barge_in=turn.barge_in,
        barge_in_min_speech_seconds=turn.barge_in_min_speech_seconds,
        barge_in_min_words=turn.barge_in_min_words,
        barge_in_ignore_backchannels=turn.barge_in_ignore_backchannels,
        speculative=turn.speculative,
        store_audio_dir=(
            Path(cfg.storage.state_dir) / "audio" if cfg.call.store_all_response_audio else None
        ),
        first_audio_seconds=cfg.call.first_audio_seconds,
        reply_seconds=cfg.call.reply_seconds,
        transcribe_seconds=cfg.call.transcribe_seconds,
        farewell=cfg.call.farewell,
        hold_line=cfg.call.hold_line,
        dtmf=cfg.call.dtmf,
        dtmf_pause_seconds=cfg.call.dtmf_pause_seconds,
        end_of_turn=turn.end_of_turn,
        complete_silence_seconds=turn.complete_silence_seconds,
        unfinished_silence_seconds=turn.unfinished_silence_seconds,
    )
