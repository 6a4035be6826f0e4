"""Retention: calls, transcripts and stored reply audio older than ``retention_days`` go.

The call log forgets the calls (:meth:`CallLog.purge`, which names them); the audio of each
lives in ``<state_dir>/audio/<CallSid>/`` (see ``CallSession._store_audio``) and is removed
here. ``retention_days = 0`` keeps everything.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import trio

from aicallerd.calllog import AsyncCallLog

log = logging.getLogger(__name__)

DAY = 86400.0


def cutoff(now: float, retention_days: int) -> float | None:
    """The start time before which calls are deleted; None when nothing ever expires."""
    return None if retention_days <= 0 else now - retention_days * DAY


def remove_call_audio(audio_dir: Path, sids: Iterable[str]) -> list[Path]:
    """Delete ``audio_dir/<sid>/`` for each SID; returns the directories removed (one that
    cannot be deleted is logged and left for the next purge).

    A SID that is not a plain file name (``..``, ``a/b``) is ignored, so a strange value in
    the database can never reach outside ``audio_dir``.
    """
    removed: list[Path] = []
    for sid in sids:
        if not sid or sid in (".", "..") or Path(sid).name != sid:
            continue
        path = audio_dir / sid
        if not path.is_dir() or path.is_symlink():
            continue
        try:
            shutil.rmtree(path)
        except OSError as exc:  # the next purge tries again
            log.error("retention: could not delete %s: %s", path, exc)
            continue
        removed.append(path)
    return removed


async def purge_expired(
    calllog: AsyncCallLog, state_dir: Path, retention_days: int, now: float
) -> list[str]:
    """Delete what is older than ``retention_days`` before ``now`` (epoch seconds): the calls
    with their turns and events, then their audio directories. Returns the purged SIDs."""
    before = cutoff(now, retention_days)
    if before is None:
        return []
    sids = await calllog.purge(before)
    if sids:
        audio_dir = state_dir / "audio"
        await trio.to_thread.run_sync(remove_call_audio, audio_dir, sids)
        log.info("retention: deleted %d call(s) older than %d days", len(sids), retention_days)
    return sids
