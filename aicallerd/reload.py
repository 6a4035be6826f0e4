"""What a reload may change while running, and what waits for a restart (sans-I/O).

A reload swaps the configuration new calls start with. Some settings are baked into things
built once at start: the listening socket, the WebSocket route, the control socket, the
state directory, and the engines (models loaded, servers started). Those keys are declared
with ``restart=True`` in `aicallerd.configschema`; they keep their running values until a
restart, and the reload says which of them changed, so an operator is never left wondering
why an edit "did nothing".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aicallerd.config import Config
from aicallerd.configschema import KEYS, SCHEMA

RESTART_ONLY: dict[str, tuple[str, ...]] = {
    section: names
    for section, keys in KEYS.items()
    if (names := tuple(name for name, k in keys.items() if k.spec.restart))
}
"""Section -> the keys a reload leaves at their running value."""


def merge_reloadable(old: Config, new: Config) -> tuple[Config, list[str]]:
    """The configuration to run with after a reload, and the changed keys that need a
    restart (as ``[section] key``; those keep their old values in the returned config)."""
    needs_restart: list[str] = []
    replaced: dict[str, Any] = {}
    for section, names in RESTART_ONLY.items():
        old_sec, new_sec = getattr(old, section), getattr(new, section)
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
    values = (getattr(getattr(cfg, k.section), k.name) for k in SCHEMA if k.spec.secret)
    return [s for s in values if s]
