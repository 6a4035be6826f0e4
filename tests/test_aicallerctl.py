"""aicallerctl against a real control server (scripted handler) on a real Unix socket.

The server runs under its own trio.run in a thread; the CLI runs in-process through
`aicallerctl.__main__.main` (and once as a real subprocess), so exit codes, stdout and the
one stderr line are exactly what a shell user gets.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.control_handler import (
    CALLS,
    NEW_SID,
    SID_IN,
    SID_OUT,
    STATUS,
    TRANSCRIPT,
    FakeControlHandler,
    ServerThread,
)

from aicallerctl.__main__ import main
from aicallerctl.commands import duration, format_cpu, socket_from_config
from aicallerd.twilio.rest import TwilioRestError

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AICALLER_SOCKET", "AICALLER_CONFIG", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def handler() -> FakeControlHandler:
    return FakeControlHandler()


@pytest.fixture
def sock(sock_dir: Path, handler: FakeControlHandler) -> Iterator[str]:
    path = str(sock_dir / "control.sock")
    with ServerThread(path, handler):
        yield path


def ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- results -------------------------------------------------------------------------------


def test_status_table(sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = ctl(capsys, "--socket", sock, "status")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "aicallerd 0.1.0 (pid 4242): ready, up 2h 03m"
    assert "config: /etc/aicaller/aicaller.conf" in lines
    assert any(line.split()[:4] == ["stt", "yes", "ok", "faster-whisper"] for line in lines)
    assert any(line.split()[:2] == ["tts", "no"] for line in lines)
    # A cloud engine whose breaker saw failures says so: the operator sees it degraded.
    assert any(line.split()[:4] == ["llm", "yes", "degraded:", "connection"] for line in lines)
    assert "active calls: 1 of 4" in lines
    row = next(line for line in lines if line.startswith(SID_IN))
    assert row.split() == [SID_IN, "in", "+15550001111", "1m", "05s", "3", "active"]
    assert "totals: offered 5, answered 4, refused_busy 0, refused_token 1, placed 2" in lines
    assert "latency over the last 12 turns:" in lines
    v2v = next(line for line in lines if line.startswith("voice_to_voice"))
    assert v2v.split() == ["voice_to_voice", "720ms", "1100ms", "12"]
    tts = next(line for line in lines if line.startswith("tts_first_audio"))
    assert tts.split() == ["tts_first_audio", "-", "-", "0"]
    # CPU per answered turn for each leg, next to the latency legs.
    assert "CPU per answered turn over 12 turns (in the 2h 03m since the engines loaded):" in lines
    cpu = lines[
        lines.index("CPU per answered turn over 12 turns (in the 2h 03m since the engines loaded):")
        + 1 :
    ]
    assert cpu[0].split() == ["LEG", "CPU/TURN", "CPU"]
    assert cpu[2].split() == ["stt", "0.250s", "3.000s"]
    assert cpu[3].split() == ["llm", "0.550s", "6.600s"]
    assert cpu[5].split() == ["framing", "0.150s", "1.800s"]
    assert cpu[7].split() == ["total", "1.330s", "15.960s"]


def test_status_cpu_before_any_turn_shows_totals_only() -> None:
    lines = format_cpu({"since_s": 5.0, "turns": 0, "seconds": {"stt": 0.5, "llm": 0.0}})
    assert lines[1] == "CPU per answered turn over 0 turns (in the 5s since the engines loaded):"
    assert lines[3].split() == ["stt", "-", "0.500s"]
    assert format_cpu(None) == []  # an older daemon without the cpu field


def test_status_json_is_the_raw_result(sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ctl(capsys, "status", "--json", "--socket", sock)  # options after the command
    assert code == 0
    assert json.loads(out) == STATUS


def test_call_prints_the_sid(
    sock: str, handler: FakeControlHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl(capsys, "--socket", sock, "call", "mom") == (0, NEW_SID + "\n", "")
    code, out, _ = ctl(capsys, "--socket", sock, "call", "+1 555 000 2222", "--prompt", "Say hi")
    assert (code, out) == (0, NEW_SID + "\n")
    assert handler.placed == [("+15551234567", None), ("+15550002222", "Say hi")]


def test_calls_table_and_json(
    sock: str, handler: FakeControlHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(capsys, "--socket", sock, "calls")
    assert code == 0 and handler.calls_limit == 20
    header, first, second = out.splitlines()
    assert header.split() == ["STARTED", "DIR", "PEER", "DURATION", "STATUS", "TURNS", "SID"]
    assert first.split()[2:] == [
        "out",
        "mom",
        "(+15551234567)",
        "1m",
        "05s",
        "hangup",
        "2",
        SID_OUT,
    ]
    assert second.split()[2:] == ["in", "+15550001111", "-", "in-progress", "3", SID_IN]
    code, out, _ = ctl(capsys, "--socket", sock, "calls", "--limit", "1", "--json")
    assert code == 0 and json.loads(out) == {"calls": CALLS[:1]}
    assert handler.calls_limit == 1


def test_transcript(sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ctl(capsys, "--socket", sock, "transcript", SID_OUT)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"call {SID_OUT} to mom (+15551234567), ")
    assert lines[0].endswith(", 1m 05s, hangup")
    assert lines[1:] == [
        "agent:  Hi Mom, it's your assistant.",
        "caller: Oh hello!",
        "agent:  I wanted to remind you about  [31mSunday  [interrupted]",  # no raw ESC
    ]
    assert "\x1b" not in out
    code, out, _ = ctl(capsys, "--socket", sock, "transcript", SID_OUT, "--json")
    assert json.loads(out) == TRANSCRIPT


def test_hangup_and_reload(
    sock: str, handler: FakeControlHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl(capsys, "--socket", sock, "hangup", SID_IN) == (0, f"{SID_IN}: completed\n", "")
    assert handler.hung_up == [SID_IN]
    assert ctl(capsys, "--socket", sock, "reload") == (0, "configuration reloaded\n", "")
    assert handler.reloads == 1


# -- failures: one line on stderr, a distinct exit code -----------------------------------


def test_unknown_contact_and_invalid_number(sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = ctl(capsys, "--socket", sock, "call", "aunt")
    assert (code, out, err) == (6, "", "aicallerctl: unknown contact 'aunt' (known: mom)\n")
    code, _, err = ctl(capsys, "--socket", sock, "call", "+0123")
    assert code == 6 and err.startswith("aicallerctl: invalid phone number '+0123'")
    assert err.count("\n") == 1


def test_twilio_refused(
    sock: str, handler: FakeControlHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    handler.twilio_refusal = TwilioRestError(
        400, 21215, "Account not authorized to call +15551234567. Perhaps you need ..."
    )
    code, out, err = ctl(capsys, "--socket", sock, "call", "mom")
    assert (code, out) == (5, "")
    assert err == (
        "aicallerctl: Twilio refused the call: 21215 Account not authorized to call "
        "+15551234567. Perhaps you need ...\n"
    )


def test_daemon_side_errors(
    sock: str, handler: FakeControlHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = ctl(capsys, "--socket", sock, "transcript", "CA" + "7" * 32)
    assert code == 6 and err == f"aicallerctl: no call CA{'7' * 32} in the call log\n"
    handler.reload_error = "/etc/aicaller/aicaller.conf: [llm] backend: expected one of ..."
    code, _, err = ctl(capsys, "--socket", sock, "reload")
    assert code == 1
    assert err == (
        "aicallerctl: reload refused: /etc/aicaller/aicaller.conf: [llm] backend: "
        "expected one of ...\n"
    )
    handler.explode = RuntimeError("bug")
    code, _, err = ctl(capsys, "--socket", sock, "status")
    assert code == 1 and err.startswith("aicallerctl: status failed inside aicallerd")


def test_not_running(sock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = sock_dir / "control.sock"
    code, out, err = ctl(capsys, "--socket", str(missing), "status")
    assert (code, out) == (3, "")
    assert err == f"aicallerctl: aicallerd is not running (no socket at {missing})\n"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(missing))  # left behind by a crash: nobody listens
    stale.close()
    code, _, err = ctl(capsys, "--socket", str(missing), "calls")
    assert (
        code == 3
        and err == f"aicallerctl: aicallerd is not running (nothing listens on {missing})\n"
    )


def test_refused_by_peer_credentials(sock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(sock_dir / "control.sock")
    with ServerThread(path, FakeControlHandler(), set(), {4711}, peer_groups=lambda pid: set()):
        code, out, err = ctl(capsys, "--socket", path, "status")
    assert (code, out) == (4, "")
    assert err.startswith(f"aicallerctl: uid {os.getuid()} is not allowed to use {path}: ")
    assert "add yourself to group" in err and err.count("\n") == 1


def _silent_server(path: str, close_at_once: bool) -> tuple[socket.socket, threading.Thread]:
    """A socket that accepts but never answers (or hangs up at once): a wedged daemon."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        if close_at_once:
            conn.recv(65536)
            conn.close()
        else:
            conn.recv(65536)
            conn.recv(1)  # until the client gives up and closes
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_no_answer_and_hang_up_are_exit_7(
    sock_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(sock_dir / "a.sock")
    listener, thread = _silent_server(path, close_at_once=False)
    code, _, err = ctl(capsys, "--socket", path, "--timeout", "0.2", "status")
    thread.join(5)
    listener.close()
    assert code == 7 and err == "aicallerctl: no answer from aicallerd within 0.2s\n"
    path = str(sock_dir / "b.sock")
    listener, thread = _silent_server(path, close_at_once=True)
    code, _, err = ctl(capsys, "--socket", path, "status")
    thread.join(5)
    listener.close()
    assert code == 7 and err == "aicallerctl: aicallerd closed the connection without answering\n"


def test_usage_errors_are_exit_2(sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(capsys, "--socket", sock, "calls", "--limit", "0")[0] == 2
    assert ctl(capsys, "--socket", sock, "call")[0] == 2
    assert ctl(capsys, "--socket", sock, "frobnicate")[0] == 2


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ctl(capsys, "--help")
    assert code == 0
    for line in ("3  aicallerd is not running", "4  permission denied", "5  Twilio refused"):
        assert line in out
    assert "test-call" in out  # the existing command is still there


# -- where the socket is -------------------------------------------------------------------


def test_socket_from_env_and_config(
    sock: str, sock_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AICALLER_SOCKET", sock)
    assert ctl(capsys, "call", "mom")[0] == 0
    monkeypatch.delenv("AICALLER_SOCKET")
    conf = sock_dir / "aicaller.conf"
    conf.write_text(f'[server]\nlisten = "127.0.0.1:1"\n\n[control]\nsocket = "{sock}"\n')
    assert ctl(capsys, "--config", str(conf), "call", "mom")[0] == 0
    monkeypatch.setenv("AICALLER_CONFIG", str(conf))
    assert ctl(capsys, "call", "mom")[0] == 0
    # --socket wins over everything
    code, _, err = ctl(capsys, "--socket", str(sock_dir / "nope.sock"), "status")
    assert code == 3 and "nope.sock" in err


def test_socket_defaults(sock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env: dict[str, str] = {}
    assert socket_from_config(str(sock_dir / "missing.conf"), env) == "/run/aicaller/control.sock"
    conf = sock_dir / "aicaller.conf"
    conf.write_text("[log]\nlevel = 'debug'\n")
    assert socket_from_config(str(conf), {"RUNTIME_DIRECTORY": "/run/x"}) == "/run/x/control.sock"
    conf.write_text("[control\n")
    code, _, err = ctl(capsys, "--config", str(conf), "status")
    assert code == 2 and err.startswith(f"aicallerctl: {conf}: invalid TOML")


def test_duration_format() -> None:
    assert [duration(s) for s in (None, 0, 59.9, 65, 3600, 7384, 90000)] == [
        "-",
        "0s",
        "59s",
        "1m 05s",
        "1h 00m",
        "2h 03m",
        "1d 01h",
    ]


# -- as a real process ---------------------------------------------------------------------


def test_entry_point_subprocess(sock: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aicallerctl", "--socket", sock, "call", "mom"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, NEW_SID + "\n", "")


STATUS_THEN_MODULES = textwrap.dedent(
    """
    import json, sys
    from aicallerctl.__main__ import main

    code = main(sys.argv[1:])
    heavy = ("numpy", "trio", "httpx", "trio_websocket", "aicallerctl.testcall")
    print(json.dumps([code, sorted(m for m in heavy if m in sys.modules)]))
    """
)


def test_status_starts_without_the_test_call_machinery(sock: str) -> None:
    """`status` on a small box: no numpy, trio or HTTP stack is loaded for it."""
    done = subprocess.run(
        [sys.executable, "-c", STATUS_THEN_MODULES, "--socket", sock, "status"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.stderr == ""
    *table, last = done.stdout.splitlines()
    assert table[0].startswith("aicallerd 0.1.0 (pid 4242): ready")
    assert json.loads(last) == [0, []]


def test_test_call_parser_is_there_without_its_machinery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = ctl(capsys, "test-call", "--config", "/nonexistent")
    assert (code, err) == (2, "aicallerctl test-call: give at least one --say TEXT or --wav FILE\n")


CTL_AS_NOBODY = textwrap.dedent(
    """
    import argparse, sys
    sys.path.insert(0, sys.argv[1])
    from aicallerctl import commands
    parser = argparse.ArgumentParser(prog="aicallerctl")
    commands.add_global_options(parser)
    commands.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(sys.argv[2:])
    sys.exit(args.func(args))
    """
)


@pytest.mark.skipif(os.getuid() != 0 or SYSTEM_PYTHON is None, reason="needs root")
def test_permission_denied_for_another_user(sock: str) -> None:
    """nobody cannot open the 0660 root:root socket: exit 4 and what to do about it."""
    assert SYSTEM_PYTHON is not None
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-B", "-c", CTL_AS_NOBODY, str(ROOT), "--socket", sock, "status"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr == (
        f"aicallerctl: not allowed to use {sock}: add yourself to group root (then log in again)\n"
    )
