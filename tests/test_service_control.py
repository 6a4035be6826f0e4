"""aicallerctl against the real daemon: status during a call, calls, transcript, hangup,
reload (calls in progress keep their settings), and STORE_ALL_RESPONSE_AUDIO.

One daemon for the module; Twilio is the stand-in (aicallerctl.testcall).
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import numpy as np
import pytest
import trio
from service_util import AUTH_TOKEN, ctl, launch, render_config, target, wer
from speech import speak

from aicallerctl.testcall import CallResult, Utterance, new_sid, place_call
from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.audio.wav import read_wav

pytestmark = pytest.mark.e2e

SAID = "What time do you open tomorrow?"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = launch(tmp_path_factory.mktemp("control"), env={"STORE_ALL_RESPONSE_AUDIO": "true"})
    yield d
    code = d.stop()
    assert code == 0, d.log_text()[-3000:]
    assert "Traceback" not in d.log_text(), d.log_text()
    assert AUTH_TOKEN not in d.log_text()


@pytest.fixture(scope="module")
def stt():
    from aicallerd.engines.stt import Transcriber

    t = Transcriber()
    t.load()
    return t


def silence(seconds: float) -> Utterance:
    return Utterance(np.zeros(int(8000 * seconds), dtype=np.int16), "")


async def call_while(d, script, sid: str, during) -> tuple[CallResult, object]:
    """Place a stand-in call and run ``during()`` (in a thread) once its stream is live."""
    out: dict[str, object] = {}

    async def call() -> None:
        out["result"] = await place_call(target(d), script, call_sid=sid)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.to_thread.run_sync(d.wait_for, f"[{sid}] call started")
        out["during"] = await trio.to_thread.run_sync(during)
    return out["result"], out["during"]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def finished_call(daemon):
    """One call with one turn, with `status --json` taken while it was live."""
    sid = new_sid("CA")
    result, status = trio.run(
        call_while,
        daemon,
        [Utterance(speak(SAID), SAID)],
        sid,
        lambda: ctl(daemon, "status", "--json"),
    )
    assert result.refused is None and len(result.turns) == 1
    daemon.wait_for(f"[{sid}] call ended")
    return result, status


def test_status_json_shows_engines_and_the_live_call(daemon, finished_call):
    result, proc = finished_call
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["ready"] is True and status["draining"] is False
    assert [e["name"] for e in status["engines"]] == ["vad", "stt", "llm", "tts"]
    assert all(e["ready"] and e["detail"] for e in status["engines"])
    live = [c for c in status["calls"] if c["sid"] == result.call_sid]
    assert len(live) == 1, status["calls"]
    assert live[0]["state"] == "active" and live[0]["direction"] == "inbound"
    assert live[0]["peer"] == "+15550001111"
    assert status["totals"]["answered"] >= 1
    assert status["config"] == str(daemon.config_path)

    # The human table too, now that the call is over.
    table = ctl(daemon, "status")
    assert table.returncode == 0
    assert "active calls: none (0 of 4)" in table.stdout
    assert "voice_to_voice" in table.stdout

    # CPU per answered turn for each leg, measured in the daemon's engine threads.
    after = json.loads(ctl(daemon, "status", "--json").stdout)["cpu"]
    assert after["turns"] >= 1
    for leg in ("stt", "llm", "tts", "framing"):
        assert after["seconds"][leg] > 0, after
    assert "CPU per answered turn over" in table.stdout
    assert any(line.split()[:1] == ["framing"] for line in table.stdout.splitlines())


def test_calls_and_transcript_after_the_call(daemon, finished_call):
    result, _ = finished_call
    sid = result.call_sid
    calls = json.loads(ctl(daemon, "calls", "--json").stdout)["calls"]
    row = next(c for c in calls if c["sid"] == sid)
    # The greeting, then one exchange.
    assert row["direction"] == "in" and row["turns"] == 3
    assert row["ended_at"] is not None and row["answered_at"] is not None

    proc = ctl(daemon, "transcript", sid, "--json")
    assert proc.returncode == 0, proc.stderr
    transcript = json.loads(proc.stdout)
    greeting, *turns = transcript["turns"]
    assert greeting["who"] == "agent" and "aicaller assistant" in greeting["text"]
    assert [t["who"] for t in turns] == ["caller", "agent"]
    assert wer(SAID, turns[0]["text"]) <= 0.35, turns[0]
    assert turns[1]["text"] and "voice_to_voice" in turns[1]["legs"]

    human = ctl(daemon, "transcript", sid).stdout.splitlines()
    assert human[0].startswith(f"call {sid} from +15550001111")
    assert human[1].startswith("agent:  ")
    assert human[2].startswith("caller: ") and human[3].startswith("agent:  ")


def test_store_all_response_audio_keeps_each_reply(daemon, finished_call, stt):
    result, _ = finished_call
    transcript = json.loads(ctl(daemon, "transcript", result.call_sid, "--json").stdout)
    agent = next(t for t in transcript["turns"] if t["who"] == "agent" and t["legs"])
    path = agent["audio_path"]
    assert path and path.startswith(str(daemon.state_dir / "audio" / result.call_sid))
    pcm, rate = read_wav(path)
    assert rate == 8000 and len(pcm) > 8000 * 0.5
    heard = stt.transcribe_sync(pcm)
    assert wer(agent["text"], heard) < 0.5, (agent["text"], heard)


def test_hangup_ends_a_live_call(daemon):
    sid = new_sid("CA")
    result, proc = trio.run(
        call_while, daemon, [silence(25)], sid, lambda: ctl(daemon, "hangup", sid)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{sid}: completed"
    assert result.closed_by_daemon  # the stand-in saw the daemon close the stream
    daemon.wait_for(f"[{sid}] call ended: operator")
    with sqlite3.connect(daemon.db_path) as db:
        (reason,) = db.execute("SELECT end_reason FROM calls WHERE sid = ?", (sid,)).fetchone()
    assert reason == "operator"


def test_http_trigger_is_off_without_a_token(daemon):
    r = httpx.post(daemon.base_url + "/call/mom", headers={"Authorization": "Bearer x"})
    assert r.status_code == 404


def test_unknown_sids_are_exit_6(daemon):
    for args in (("hangup", "CA" + "0" * 32), ("transcript", "CA" + "0" * 32)):
        proc = ctl(daemon, *args)
        assert proc.returncode == 6, proc
        assert proc.stderr.startswith("aicallerctl: no call ") and proc.stderr.count("\n") == 1


def test_bad_config_on_reload_is_refused_and_reported(daemon):
    good = daemon.config_path.read_text()
    try:
        daemon.config_path.write_text(good + '\n[call]\nmax_silence_seconds = "soon"\n')
        proc = ctl(daemon, "reload")
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1
        assert str(daemon.config_path) in proc.stderr
        assert "[call] max_silence_seconds: expected" in proc.stderr
        daemon.wait_for("reload refused, the running configuration stays")
        assert json.loads(ctl(daemon, "status", "--json").stdout)["ready"] is True
    finally:
        daemon.config_path.write_text(good)


def test_reload_applies_to_new_calls_only(daemon, stt):
    """A call in progress keeps its settings; one started after the reload gets the new ones."""
    good = daemon.config_path.read_text()
    greeting = "Welcome to the reloaded line."
    before, after = new_sid("CA"), new_sid("CA")

    async def scenario() -> tuple[CallResult, CallResult, dict]:
        out: dict[str, object] = {}

        async def old_call() -> None:
            out["old"] = await place_call(target(daemon), [silence(40)], call_sid=before)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(old_call)
            await trio.to_thread.run_sync(daemon.wait_for, f"[{before}] call started")
            new_config = render_config(
                daemon.port, f'[call]\nmax_silence_seconds = 3\ngreeting = "{greeting}"\n'
            )
            daemon.config_path.write_text(new_config)
            proc = await trio.to_thread.run_sync(ctl, daemon, "reload")
            assert proc.returncode == 0, proc.stderr
            # Hung up after 3 s of silence: the new setting.
            out["new"] = await place_call(target(daemon), [silence(40)], call_sid=after)
            status = await trio.to_thread.run_sync(ctl, daemon, "status", "--json")
            out["status"] = json.loads(status.stdout)
            hangup = await trio.to_thread.run_sync(ctl, daemon, "hangup", before)
            assert hangup.returncode == 0, hangup.stderr
        return out["old"], out["new"], out["status"]  # type: ignore[return-value]

    try:
        old, new, status = trio.run(scenario)
    finally:
        daemon.config_path.write_text(good)
        assert ctl(daemon, "reload").returncode == 0
    assert new.closed_by_daemon
    daemon.wait_for(f"[{after}] call ended: silence")
    heard = stt.transcribe_sync(ulaw_decode(bytes(new.greeting_audio)))
    assert wer(greeting, heard) < 0.4, heard
    # The call that started before the reload was still live when the new one had ended.
    assert [c["sid"] for c in status["calls"]] == [before]
    assert old.closed_by_daemon
    daemon.wait_for(f"[{before}] call ended: operator")
