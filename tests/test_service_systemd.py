"""The daemon as systemd runs it: sd_notify on a real NOTIFY_SOCKET, the watchdog, SIGHUP
reload, SIGTERM drain, journald log lines, and the exit codes the unit relies on.
"""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import trio
from service_util import NotifyListener, ctl, launch, render_config, target

from aicallerctl.testcall import Utterance, new_sid, place_call
from aicallerd.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

GRACE = 2.0
BUSY = "Sorry, all of our lines are busy right now."


@pytest.fixture(scope="module")
def notify(tmp_path_factory):
    listener = NotifyListener(str(tmp_path_factory.mktemp("notify") / "notify.sock"))
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, notify):
    d = launch(
        tmp_path_factory.mktemp("systemd"),
        f"[server]\nshutdown_grace_seconds = {GRACE}\n",
        env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"},
        journal=True,
        wait=False,
    )
    yield d
    d.stop(signal.SIGKILL)


def silence(seconds: float) -> Utterance:
    return Utterance(np.zeros(int(8000 * seconds), dtype=np.int16), "")


def voice(d, sid: str) -> httpx.Response:
    params = {"CallSid": sid, "From": "+15550001111", "To": "+15550002222"}
    signature = compute_signature(d.auth_token, d.public_url + "/voice", params)
    return httpx.post(d.base_url + "/voice", data=params, headers={"X-Twilio-Signature": signature})


# -- start-up failures (no daemon needed) ---------------------------------------------------


def test_config_error_at_start_exits_78(tmp_path):
    config = tmp_path / "aicaller.conf"
    config.write_text('[server]\nlisten = "127.0.0.1"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "aicallerd", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert proc.stderr.splitlines() == [
        f"aicallerd: config error: {config}: [server] listen: expected host:port, got '127.0.0.1'"
    ]


def test_port_in_use_is_one_clear_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        d = launch(tmp_path, port=port, wait=False)
        code = d.proc.wait(timeout=60)
    assert code == 1
    text = d.log_text()
    assert f"cannot start: cannot listen on 127.0.0.1:{port}: Address already in use" in text
    assert "Traceback" not in text
    errors = [line for line in d.lines if " ERROR " in line]
    assert len(errors) == 1, d.lines


def test_control_socket_path_taken_is_one_clear_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a socket")
    d = launch(tmp_path, f'[control]\nsocket = "{taken}"\n', wait=False)
    assert d.proc.wait(timeout=60) == 1
    errors = [line for line in d.lines if " ERROR " in line]
    assert errors and errors[0].endswith(
        f"cannot start: control socket: {taken} exists and is not a socket; not replacing it"
    )
    assert len(errors) == 1 and "Traceback" not in d.log_text(), d.lines
    assert taken.read_text() == "not a socket"


# -- the running service --------------------------------------------------------------------


def test_ready_only_once_engines_are_warm_and_sockets_listen(daemon, notify):
    _, first = notify.wait_for("^STATUS=")
    assert first == "STATUS=loading engines"
    t_ready, ready = notify.wait_for("READY=1")
    # At the moment systemd hears READY=1, both sockets answer and every engine is warm.
    assert httpx.get(daemon.base_url + "/health").text == "ok\n"
    status = ctl(daemon, "status", "--json")
    assert '"ready": true' in status.stdout
    assert ready == "READY=1\nSTATUS=ready, 0 active calls of 4"
    daemon.wait_for("ready:")
    before_ready = [d for _, d in notify.datagrams[: notify.datagrams.index((t_ready, ready))]]
    assert not any("READY=1" in d for d in before_ready)


def test_journal_lines_carry_priority_and_call_sid(daemon):
    line = daemon.wait_for("ready:")
    assert line.startswith("<6>aicallerd: ready: listening on http://127.0.0.1:")
    assert not re.match(r"^\d{4}-", line)  # journald adds its own timestamps


def test_watchdog_pings_at_half_the_interval(daemon, notify):
    t1, _ = notify.wait_for("^WATCHDOG=1$")
    t2, _ = notify.wait_for("^WATCHDOG=1$")
    t3, _ = notify.wait_for("^WATCHDOG=1$")
    assert 0.3 < t2 - t1 < 0.9 and 0.3 < t3 - t2 < 0.9  # WATCHDOG_USEC=1s -> every 0.5 s


def test_status_follows_the_active_calls(daemon, notify):
    sid = new_sid("CA")
    result = trio.run(lambda: place_call(target(daemon), [], call_sid=sid))
    assert result.refused is None
    notify.wait_for(r"^STATUS=ready, 1 active call of 4$")
    notify.wait_for(r"^STATUS=ready, 0 active calls of 4$")
    daemon.wait_for(f"[{sid}] call ended")
    call_lines = [line for line in daemon.lines if line.startswith("<6>aicallerd.call:")]
    assert call_lines and all(f"[{sid}]" in line for line in call_lines), call_lines


def test_sighup_reloads_with_reloading_and_monotonic_usec(daemon, notify):
    daemon.proc.send_signal(signal.SIGHUP)
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    _, reloading = notify.wait_for("RELOADING=1")
    m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", reloading)
    assert m and abs(int(m.group(1)) - now_us) < 5_000_000, reloading
    _, ready = notify.wait_for("READY=1")
    assert ready.startswith("READY=1\nSTATUS=ready")
    daemon.wait_for("configuration reloaded from")


def test_bad_config_on_sighup_keeps_the_old_one(daemon, notify):
    good = daemon.config_path.read_text()
    try:
        daemon.config_path.write_text(good.replace("max_concurrent_calls = 4", "max_calls = 4"))
        daemon.proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        line = daemon.wait_for("reload refused")
        assert line.startswith("<3>aicallerd: reload refused, the running configuration stays: ")
        assert f"{daemon.config_path}: [server] max_calls: expected one of: listen," in line
    finally:
        daemon.config_path.write_text(good)
    r = voice(daemon, new_sid("CA"))  # still serving, with the old configuration
    assert r.status_code == 200 and "<Connect><Stream" in r.text


def test_sigterm_drains_calls_then_exits_0(daemon, notify):
    sid = new_sid("CA")

    async def scenario():
        out = {}

        async def call() -> None:
            out["result"] = await place_call(target(daemon), [silence(30)], call_sid=sid)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.to_thread.run_sync(daemon.wait_for, f"[{sid}] call started")
            daemon.proc.send_signal(signal.SIGTERM)
            out["stopping"] = await trio.to_thread.run_sync(notify.wait_for, "STOPPING=1")
            out["stopping_at"] = time.monotonic()
            async with httpx.AsyncClient() as client:
                late = new_sid("CA")
                params = {"CallSid": late, "From": "+15550001111", "To": "+15550002222"}
                sig = compute_signature(daemon.auth_token, daemon.public_url + "/voice", params)
                out["late"] = await client.post(
                    daemon.base_url + "/voice", data=params, headers={"X-Twilio-Signature": sig}
                )
        out["ended_at"] = time.monotonic()
        return out

    out = trio.run(scenario)
    assert daemon.proc.wait(timeout=60) == 0
    late = out["late"]
    assert late.status_code == 200 and BUSY in late.text and "<Hangup/>" in late.text
    result = out["result"]
    assert result.closed_by_daemon
    # The call had its grace period, then a goodbye, then the stream was closed.
    assert out["ended_at"] - out["stopping_at"] >= GRACE - 0.5
    daemon.wait_for(f"[{sid}] hanging up: shutdown")
    with sqlite3.connect(daemon.db_path) as db:
        row = db.execute("SELECT end_reason, ended_at FROM calls WHERE sid = ?", (sid,)).fetchone()
    assert row[0] == "shutdown" and row[1] is not None
    assert not (daemon.runtime_dir / "control.sock").exists()
    assert "Traceback" not in daemon.log_text(), daemon.log_text()


def test_render_config_puts_keys_under_their_sections():
    text = render_config(5000, "[server]\nx = 1\n[twilio]\ny = 2\n[call]\nz = 3\n")
    assert text.index("x = 1") < text.index("[twilio]") < text.index("y = 2") < text.index("[call]")
