"""What a reload may change while running, and what waits for a restart (sans-I/O).

A reload swaps the configuration new calls start with. Some settings are baked into things
built once at start: the listening socket, the WebSocket route, the control socket, the
state directory, and the engines (models loaded, servers started). Those keep their running
values until a restart, and the reload says which of them changed, so an operator is never
left wondering why an edit "did nothing".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aicallerd.config import Config

_ALL = None  # every key of the section
RESTART_ONLY: dict[str, tuple[str, ...] | None] = {
    "server": ("listen", "stream_path"),
    "control": _ALL,
    "storage": _ALL,
    "stt": _ALL,
    "llm": ("backend", "url", "model", "embedded_model", "keep_alive", "timeout_seconds"),
    "tts": _ALL,
    "turn": ("vad",),
}


def merge_reloadable(old: Config, new: Config) -> tuple[Config, list[str]]:
    """The configuration to run with after a reload, and the changed keys that need a
    restart (as ``[section] key``; those keep their old values in the returned config)."""
    needs_restart: list[str] = []
    replaced: dict[str, Any] = {}
    for section, keys in RESTART_ONLY.items():
        old_sec, new_sec = getattr(old, section), getattr(new, section)
        names = keys or tuple(f.name for f in dataclasses.fields(old_sec))
        keep = {}
        for name in names:
            if getattr(old_sec, name) != getattr(new_sec, name):
                needs_restart.append(f"[{section}] {name}")
                keep[name] = getattr(old_sec, name)
        if keep:
            replaced[section] = dataclasses.replace(new_sec, **keep)
    return dataclasses.replace(new, **replaced), needs_restart


def secrets_of(cfg: Config) -> list[str]:
    """Every secret in a configuration, for the log filter."""
    return [
        s
        for s in (cfg.twilio.auth_token, cfg.twilio.call_trigger_token, cfg.tts.elevenlabs_api_key)
        if s
    ]
