import inspect
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest
import trio

from aicallerd.calllog import SCHEMA_VERSION, AsyncCallLog, CallLog, CallLogError


@pytest.fixture
def db(tmp_path):
    log = CallLog(tmp_path / "state" / "calls.sqlite3")
    log.open()
    yield log
    log.close()


def test_file_is_wal_normal_and_versioned(db):
    assert db.path.exists()
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    other = sqlite3.connect(db.path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    finally:
        other.close()


def test_call_lifecycle(db):
    db.start_call("CA1", "in", "+15550100", "+15550199", 1000.0, status="ringing")
    db.update_status("CA1", "in-progress", 1003.0)
    db.update_status("CA1", "in-progress", 1009.0)  # a repeat does not move the answer time
    db.end_call("CA1", 1060.0, "completed", "caller hung up")
    db.update_status("CA1", "completed", 1061.0)  # Twilio's callback after our own end
    assert db.get_call("CA1") == {
        "sid": "CA1",
        "direction": "in",
        "from_number": "+15550100",
        "to_number": "+15550199",
        "contact": None,
        "started_at": 1000.0,
        "answered_at": 1003.0,
        "ended_at": 1060.0,
        "status": "completed",
        "end_reason": "caller hung up",
    }
    assert db.events("CA1") == [
        {"at": 1003.0, "status": "in-progress"},
        {"at": 1009.0, "status": "in-progress"},
        {"at": 1061.0, "status": "completed"},
    ]
    assert db.get_call("CA404") is None


def test_unanswered_outbound_call_is_ended_by_its_status_callback(db):
    db.start_call("CA2", "out", "+15550199", "+15550123", 50.0, contact="Mom", status="queued")
    db.update_status("CA2", "ringing", 51.0)
    assert db.get_call("CA2")["status"] == "ringing"
    db.update_status("CA2", "no-answer", 80.0)
    call = db.get_call("CA2")
    assert (call["status"], call["ended_at"], call["end_reason"]) == (
        "no-answer",
        80.0,
        "no-answer",
    )
    assert call["answered_at"] is None
    db.update_status("CA2", "ringing", 81.0)  # a late, out-of-order callback
    assert db.get_call("CA2")["status"] == "no-answer"


def test_start_call_again_fills_blanks_only(db):
    db.start_call("CA3", "out", None, "+15550123", 10.0, contact="Mom", status="queued")
    db.start_call("CA3", "in", "+15550199", "+15559999", 12.0, contact=None)
    call = db.get_call("CA3")
    assert call["direction"] == "out"
    assert call["from_number"] == "+15550199"
    assert call["to_number"] == "+15550123"
    assert call["contact"] == "Mom"
    assert call["started_at"] == 10.0
    assert call["status"] == "queued"


def test_status_for_unknown_call_keeps_the_event(db):
    db.update_status("CA-early", "initiated", 5.0)
    assert db.get_call("CA-early") is None
    assert db.events("CA-early") == [{"at": 5.0, "status": "initiated"}]


def test_mark_answered(db):
    db.start_call("CA5", "in", "+1", "+2", 1.0)
    db.mark_answered("CA5", 2.0)
    db.mark_answered("CA5", 3.0)
    call = db.get_call("CA5")
    assert (call["answered_at"], call["status"]) == (2.0, "in-progress")


def test_turns_and_transcript(db):
    db.start_call("CA1", "in", "+1", "+2", 1.0)
    first = db.add_turn("CA1", "caller", "Hi, is Anna there?", False, 2.0, {"stt": 412.5})
    second = db.add_turn(
        "CA1",
        "agent",
        "She is out, can I take a message?",
        True,
        3.0,
        {"llm_first": 240, "tts_first": 180},
        audio_path="audio/CA1-2.wav",
    )
    assert second > first
    assert db.transcript("CA1") == [
        {
            "id": first,
            "call_sid": "CA1",
            "seq": 1,
            "who": "caller",
            "text": "Hi, is Anna there?",
            "interrupted": False,
            "started_at": 2.0,
            "legs": {"stt": 412.5},
            "audio_path": None,
        },
        {
            "id": second,
            "call_sid": "CA1",
            "seq": 2,
            "who": "agent",
            "text": "She is out, can I take a message?",
            "interrupted": True,
            "started_at": 3.0,
            "legs": {"llm_first": 240, "tts_first": 180},
            "audio_path": "audio/CA1-2.wav",
        },
    ]
    assert db.transcript("CA404") == []


def test_bad_turn_rolls_back_and_the_connection_stays_usable(db):
    db.start_call("CA1", "in", "+1", "+2", 1.0)
    with pytest.raises(sqlite3.IntegrityError):
        db.add_turn("CA1", "robot", "beep", False, 2.0)
    with pytest.raises(sqlite3.IntegrityError):
        db.add_turn("CA-unknown", "caller", "orphan", False, 2.0)
    assert not db.conn.in_transaction
    db.add_turn("CA1", "caller", "hello", False, 2.0)
    assert [t["seq"] for t in db.transcript("CA1")] == [1]


def test_recent_calls_newest_first_with_turn_counts(db):
    for i in range(5):
        db.start_call(f"CA{i}", "in", "+1", "+2", 100.0 + i)
    db.add_turn("CA3", "caller", "a", False, 104.0)
    db.add_turn("CA3", "agent", "b", False, 105.0)
    recent = db.recent_calls(3)
    assert [c["sid"] for c in recent] == ["CA4", "CA3", "CA2"]
    assert [c["turns"] for c in recent] == [0, 2, 0]


def test_reopen_keeps_data_and_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "calls.sqlite3"
    with CallLog(path) as log:
        log.start_call("CA1", "in", "+1", "+2", 1.0)
    with CallLog(path) as log:
        assert log.get_call("CA1")["sid"] == "CA1"
        log.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(CallLogError, match="newer"):
        CallLog(path).open()


def test_closed_log_says_so(tmp_path):
    with pytest.raises(CallLogError, match="not open"):
        CallLog(tmp_path / "x.sqlite3").get_call("CA1")


def test_async_facade_serialises_writers(tmp_path):
    path = tmp_path / "calls.sqlite3"

    async def main():
        async with AsyncCallLog(path) as log:
            await log.start_call("CA1", "in", "+1", "+2", 1.0)
            await log.update_status("CA1", "in-progress", 2.0)
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(log.add_turn, "CA1", "caller", f"t{i}", False, 3.0 + i)
            await log.end_call("CA1", 99.0, "completed", "agent hung up")
            return (
                await log.get_call("CA1"),
                await log.transcript("CA1"),
                await log.recent_calls(5),
                await log.events("CA1"),
            )

    call, turns, recent, events = trio.run(main)
    assert call["end_reason"] == "agent hung up"
    assert [t["seq"] for t in turns] == list(range(1, 41))
    assert sorted(t["text"] for t in turns) == sorted(f"t{i}" for i in range(40))
    assert recent[0]["turns"] == 40
    assert events == [{"at": 2.0, "status": "in-progress"}]


WRITER = textwrap.dedent(
    """
    import sys
    from aicallerd.calllog import CallLog

    log = CallLog(sys.argv[1])
    log.open()
    log.start_call("CA1", "in", "+15550100", "+15550199", 1.0)
    n = 0
    while True:
        n += 1
        log.add_turn("CA1", "caller" if n % 2 else "agent", "word " * 200 + str(n), False,
                     float(n), {"stt": n})
        print(n, flush=True)
    """
)


def test_sigkill_mid_write_keeps_every_committed_turn(tmp_path):
    path = tmp_path / "calls.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        reported = 0
        while reported < 300:
            line = proc.stdout.readline()
            assert line, "writer died early"
            reported = int(line)
        proc.send_signal(signal.SIGKILL)  # while it is busy writing the next turns
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert path.with_name(path.name + "-wal").exists()  # recovery goes through the WAL

    with CallLog(path) as log:
        assert log.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        turns = log.transcript("CA1")
    # Every reported turn is there; at most the ones committed but not yet reported are extra.
    assert len(turns) >= reported
    assert [t["seq"] for t in turns] == list(range(1, len(turns) + 1))
    assert all(t["text"].endswith(str(t["seq"])) for t in turns)
    assert turns[-1]["legs"] == {"stt": len(turns)}


def test_purge_deletes_old_calls_with_their_turns_and_events(tmp_path):
    path = tmp_path / "calls.sqlite3"
    with CallLog(path) as log:
        for sid, started in (("CAold", 100.0), ("CAedge", 200.0), ("CAnew", 300.0)):
            log.start_call(sid, "in", "+1", "+2", started)
            log.add_turn(sid, "caller", f"hello from {sid}", False, started + 1)
            log.update_status(sid, "completed", started + 50)
        log.update_status("CAstray", "ringing", 150.0)  # a callback for a call never recorded
        log.update_status("CAlate", "ringing", 250.0)

        assert log.purge(200.0) == ["CAold"]

    with CallLog(path) as log:  # committed: a fresh connection sees it
        assert [c["sid"] for c in log.recent_calls()] == ["CAnew", "CAedge"]
        assert log.get_call("CAold") is None
        assert log.transcript("CAold") == [] and log.events("CAold") == []
        assert log.events("CAstray") == []
        assert log.events("CAlate") == [{"at": 250.0, "status": "ringing"}]
        assert [t["text"] for t in log.transcript("CAedge")] == ["hello from CAedge"]
        assert log.conn.execute("SELECT count(*) FROM turns").fetchone()[0] == 2
        assert log.purge(200.0) == []


def test_async_log_offers_every_call_log_method_in_a_worker_thread(tmp_path):
    public = {
        name
        for name, value in vars(CallLog).items()
        if callable(value) and not name.startswith("_")
    }
    assert public >= {"start_call", "add_turn", "purge", "transcript", "open", "close"}
    threads: dict[str, int] = {}

    class Spy(CallLog):
        def recent_calls(self, limit: int = 20):
            threads["worker"] = threading.get_ident()
            return super().recent_calls(limit)

    async def main():
        log = AsyncCallLog(tmp_path / "calls.sqlite3")
        log.sync = Spy(log.sync.path)
        async with log:
            await log.start_call("CA1", "in", "+1", "+2", 1.0)
            threads["loop"] = threading.get_ident()
            return await log.recent_calls(limit=1), await log.purge(older_than=2.0)

    recent, purged = trio.run(main)
    assert all(inspect.iscoroutinefunction(getattr(AsyncCallLog, name)) for name in public)
    assert [c["sid"] for c in recent] == ["CA1"] and purged == ["CA1"]
    assert threads["worker"] != threads["loop"]
