"""Retention: old calls leave the call log and their stored audio leaves the disk."""

import logging
import os

import trio

from aicallerd.calllog import AsyncCallLog, CallLog
from aicallerd.retention import DAY, cutoff, purge_expired, remove_call_audio

NOW = 1_700_000_000.0


def store_audio(audio_dir, sid: str) -> None:
    """What the session writes when store_all_response_audio is on."""
    (audio_dir / sid).mkdir(parents=True)
    (audio_dir / sid / "turn-001.wav").write_bytes(b"RIFF....WAVE")


def test_cutoff_counts_days_back_and_zero_keeps_forever():
    assert cutoff(NOW, 90) == NOW - 90 * DAY
    assert cutoff(NOW, 1) == NOW - 86400
    assert cutoff(NOW, 0) is None


def test_remove_call_audio_deletes_only_the_named_calls(tmp_path):
    audio = tmp_path / "audio"
    for sid in ("CAold", "CAkeep"):
        store_audio(audio, sid)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "x").write_text("keep me")

    removed = remove_call_audio(audio, ["CAold", "CAnever-stored", "..", "../precious", ""])

    assert removed == [audio / "CAold"]
    assert sorted(p.name for p in audio.iterdir()) == ["CAkeep"]
    assert (tmp_path / "precious" / "x").read_text() == "keep me"


def test_remove_call_audio_does_not_follow_a_symlink(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("keep me")
    os.symlink(tmp_path / "elsewhere", audio / "CAlink")

    assert remove_call_audio(audio, ["CAlink"]) == []
    assert (tmp_path / "elsewhere" / "x").exists()


def test_purge_expired_deletes_old_calls_and_their_audio(tmp_path, caplog):
    state = tmp_path / "state"
    audio = state / "audio"
    with CallLog(state / "calls.db") as db:
        db.start_call("CAold", "in", "+1", "+2", NOW - 91 * DAY)
        db.add_turn("CAold", "agent", "Hello.", False, NOW - 91 * DAY, audio_path="x")
        db.start_call("CAnew", "in", "+1", "+2", NOW - 89 * DAY)
    store_audio(audio, "CAold")
    store_audio(audio, "CAnew")

    async def main(days: int) -> list[str]:
        async with AsyncCallLog(state / "calls.db") as log:
            return await purge_expired(log, state, days, NOW)

    assert trio.run(main, 0) == []  # 0 = keep forever
    assert sorted(p.name for p in audio.iterdir()) == ["CAnew", "CAold"]

    with caplog.at_level(logging.INFO, logger="aicallerd.retention"):
        assert trio.run(main, 90) == ["CAold"]
    assert sorted(p.name for p in audio.iterdir()) == ["CAnew"]
    with CallLog(state / "calls.db") as db:
        assert [c["sid"] for c in db.recent_calls()] == ["CAnew"]
        assert db.transcript("CAold") == []
    assert "deleted 1 call(s) older than 90 days" in caplog.text
