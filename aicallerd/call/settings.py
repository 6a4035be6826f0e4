"""Freeze what a call needs from the configuration when it starts."""

from __future__ import annotations

from pathlib import Path

from aicallerd.call.lines import TIME_LIMIT_LINE
from aicallerd.call.reply import ReplySettings
from aicallerd.call.session import CallSettings, seconds_or_inf
from aicallerd.config import Config
from aicallerd.endpointer import EndpointerSettings


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
    )
