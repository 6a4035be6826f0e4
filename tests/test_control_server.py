"""The control socket server on real Unix sockets, under trio, with a scripted handler."""

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
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

from aicallerd.control.protocol import MAX_LINE, LineSplitter
from aicallerd.control.server import ControlServer, ControlServerError, peer_groups
from aicallerd.twilio.rest import TwilioRestError

NOBODY = 65534
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
as_root = pytest.mark.skipif(
    os.getuid() != 0 or SYSTEM_PYTHON is None, reason="needs root to run a client as nobody"
)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory (AF_UNIX paths are limited to 107 bytes) others may enter."""
    path = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class LineConn:
    """A trio client: send raw bytes or request objects, read one response line."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.splitter = LineSplitter(1 << 25)
        self.lines: list[bytes] = []

    async def send(self, data: bytes | dict[str, Any]) -> None:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode() + b"\n"
        await self.stream.send_all(raw)

    async def read(self) -> dict[str, Any] | None:
        """The next response, or None at EOF."""
        while not self.lines:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # ECONNRESET: closed with our data unread
                data = b""
            if not data:
                return None
            self.lines += [x for x in self.splitter.feed(data) if isinstance(x, bytes)]
        return json.loads(self.lines.pop(0))

    async def ask(self, data: bytes | dict[str, Any]) -> dict[str, Any]:
        await self.send(data)
        response = await self.read()
        assert response is not None, "server closed the connection"
        return response


@asynccontextmanager
async def serving(path: Path, handler: Any, **kw: Any) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, handler, **kw)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(server.serve)
        assert started == str(path)
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(path: Path) -> AsyncIterator[LineConn]:
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        yield LineConn(stream)


def test_every_command_round_trip(sock_dir: Path) -> None:
    handler = FakeControlHandler()
    path = sock_dir / "control.sock"

    async def main() -> list[dict[str, Any]]:
        async with serving(path, handler), connect(path) as conn:
            return [
                await conn.ask({"id": 1, "cmd": "status"}),
                await conn.ask({"id": 2, "cmd": "call", "args": {"target": "mom"}}),
                await conn.ask(
                    {"id": 3, "cmd": "call", "args": {"target": "+1 555 000 2222", "prompt": "p"}}
                ),
                await conn.ask({"id": 4, "cmd": "calls", "args": {"limit": 1}}),
                await conn.ask({"id": 5, "cmd": "transcript", "args": {"sid": SID_OUT}}),
                await conn.ask({"id": "six", "cmd": "hangup", "args": {"sid": SID_IN}}),
                await conn.ask({"cmd": "reload"}),
            ]

    answers = trio.run(main)
    assert [a["id"] for a in answers] == [1, 2, 3, 4, 5, "six", None]
    assert all(a["ok"] for a in answers), answers
    results = [a["result"] for a in answers]
    assert results[0] == STATUS
    assert results[1] == {
        "sid": NEW_SID,
        "status": "queued",
        "to": "+15551234567",
        "contact": "mom",
    }
    assert results[2]["to"] == "+15550002222"
    assert results[3] == {"calls": CALLS[:1]}
    assert results[4] == TRANSCRIPT
    assert results[5] == {"sid": SID_IN, "status": "completed"}
    assert results[6]["message"] == "configuration reloaded"
    assert handler.placed == [("+15551234567", None), ("+15550002222", "p")]
    assert handler.calls_limit == 1 and handler.hung_up == [SID_IN] and handler.reloads == 1


def test_socket_mode_is_0660_whatever_the_umask_and_removed_on_exit(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    modes = []

    async def main() -> None:
        old = os.umask(0o027)  # the unit's UMask: bind alone would give 0750
        try:
            async with serving(path, FakeControlHandler()):
                st = os.stat(path)
                modes.append((stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode)))
        finally:
            os.umask(old)

    trio.run(main)
    assert modes == [(True, 0o660)]
    assert not path.exists()


def test_errors_are_precise_and_the_connection_stays_usable(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FakeControlHandler()
    path = sock_dir / "control.sock"

    async def main() -> list[dict[str, Any]]:
        out = []
        async with serving(path, handler), connect(path) as conn:
            out.append(await conn.ask(b"this is not json\n"))
            out.append(await conn.ask({"id": 2, "cmd": "dial"}))
            out.append(await conn.ask({"id": 3, "cmd": "calls", "args": {"limit": "ten"}}))
            out.append(await conn.ask({"id": 4, "cmd": "call", "args": {"target": "aunt"}}))
            out.append(await conn.ask({"id": 5, "cmd": "call", "args": {"target": "+0123"}}))
            handler.twilio_refusal = TwilioRestError(
                400, 21215, "Account not authorized to call +15551234567", "https://x/21215"
            )
            out.append(await conn.ask({"id": 6, "cmd": "call", "args": {"target": "mom"}}))
            out.append(await conn.ask({"id": 7, "cmd": "transcript", "args": {"sid": "CAx"}}))
            handler.reload_error = "/etc/aicaller/aicaller.conf: [llm] backend: expected ..."
            out.append(await conn.ask({"id": 8, "cmd": "reload"}))
            handler.explode = RuntimeError("kaboom")
            out.append(await conn.ask({"id": 9, "cmd": "status"}))
            handler.explode = None
            out.append(await conn.ask({"id": 10, "cmd": "status"}))
        return out

    caplog.set_level(logging.INFO, logger="aicallerd.control")
    answers = trio.run(main)
    errors = [(a["id"], a["error"]["code"]) for a in answers[:-1]]
    assert errors == [
        (None, "bad_json"),
        (2, "unknown_command"),
        (3, "bad_args"),
        (4, "unknown_contact"),
        (5, "invalid_number"),
        (6, "twilio_refused"),
        (7, "no_such_call"),
        (8, "reload_failed"),
        (9, "internal"),
    ]
    assert (
        answers[2]["error"]["message"] == "calls: argument 'limit' must be an integer, got \"ten\""
    )
    assert "unknown contact 'aunt' (known: mom)" == answers[3]["error"]["message"]
    twilio = answers[5]["error"]
    assert twilio["message"] == (
        "Twilio refused the call: 21215 Account not authorized to call +15551234567"
    )
    assert twilio["details"] == {
        "twilio_code": 21215,
        "twilio_status": 400,
        "more_info": "https://x/21215",
    }
    assert "[llm] backend" in answers[7]["error"]["message"]
    assert "kaboom" not in answers[8]["error"]["message"]  # details stay in the log
    assert "kaboom" in caplog.text and "Traceback" in caplog.text
    assert answers[-1]["ok"] is True
    assert "call target=mom" in caplog.text  # who did what, for the journal


def test_overlong_line_is_refused_then_next_request_works(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(path, FakeControlHandler()), connect(path) as conn:
            await conn.send(b'{"cmd":"call","args":{"target":"' + b"m" * (MAX_LINE * 3))
            too_long = await conn.read()
            assert too_long is not None
            await conn.send(b'"}}\n')
            return too_long, await conn.ask({"id": 2, "cmd": "status"})

    too_long, after = trio.run(main)
    assert too_long["error"]["code"] == "line_too_long"
    assert after["id"] == 2 and after["ok"]


def test_pipelined_requests_and_last_line_without_newline(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"

    async def main() -> list[dict[str, Any] | None]:
        async with serving(path, FakeControlHandler()), connect(path) as conn:
            await conn.send(
                b'{"id":1,"cmd":"status"}\n\n{"id":2,"cmd":"calls"}\n{"id":3,"cmd":"reload"}'
            )
            await conn.stream.send_eof()
            return [await conn.read(), await conn.read(), await conn.read(), await conn.read()]

    answers = trio.run(main)
    assert [a["id"] for a in answers[:3] if a] == [1, 2, 3]
    assert answers[3] is None  # the server closes after answering everything


def test_many_connections_at_once(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    results: list[int] = []

    async def one(i: int) -> None:
        async with connect(path) as conn:
            answer = await conn.ask({"id": i, "cmd": "status"})
            results.append(answer["id"])

    async def main() -> None:
        async with serving(path, FakeControlHandler()):
            held = await trio.open_unix_socket(str(path))  # an idle client must not block others
            async with held, trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)

    trio.run(main)
    assert sorted(results) == list(range(20))


def test_peer_not_allowed_gets_one_forbidden_line(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "control.sock"
    asked: list[object] = []

    def groups(sock: object) -> set[int]:
        asked.append(sock)
        return {424242}

    async def main() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        async with (
            serving(
                path, FakeControlHandler(), allowed_uids=set(), allowed_gids={7}, peer_groups=groups
            ),
            connect(path) as conn,
        ):
            await conn.send({"id": 1, "cmd": "status"})
            return await conn.read(), await conn.read()

    caplog.set_level(logging.WARNING, logger="aicallerd.control")
    first, second = trio.run(main)
    assert first is not None and first["ok"] is False and first["id"] is None
    assert first["error"]["code"] == "forbidden"
    assert f"uid {os.getuid()} is not allowed to use {path}" in first["error"]["message"]
    assert "add yourself to group" in first["error"]["message"]
    assert second is None  # and the connection is closed
    assert len(asked) == 1  # looked up once, on the connection's own socket
    (record,) = [r for r in caplog.records if "refused control connection" in r.getMessage()]
    assert f"uid {os.getuid()} gid {os.getgid()} (pid {os.getpid()})" in record.getMessage()


def test_peer_allowed_by_supplementary_group(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"

    async def main() -> dict[str, Any]:
        kw: dict[str, Any] = {"allowed_uids": set(), "allowed_gids": {4711}}
        async with serving(path, FakeControlHandler(), peer_groups=lambda sock: {4711}, **kw):
            async with connect(path) as conn:
                return await conn.ask({"id": 1, "cmd": "status"})

    assert trio.run(main)["ok"] is True


def test_peer_groups_reads_our_own_groups_from_the_socket() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_groups(a) == set(os.getgroups())
        assert peer_groups(b) == set(os.getgroups())


def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file nobody listens on, as after a crash
    stale.close()
    assert path.exists()
    with ServerThread(str(path), FakeControlHandler()):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b'{"cmd":"status"}\n')
            assert json.loads(s.makefile("rb").readline())["ok"] is True


def test_live_socket_and_regular_file_are_not_replaced(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    with ServerThread(str(path), FakeControlHandler()):
        with pytest.raises(ControlServerError, match="already listening"):
            trio.run(ControlServer(path, FakeControlHandler()).serve)
    other = sock_dir / "notasocket"
    other.write_text("precious")
    with pytest.raises(ControlServerError, match="not a socket"):
        trio.run(ControlServer(other, FakeControlHandler()).serve)
    assert other.read_text() == "precious"


def test_path_too_long_is_a_clear_error(sock_dir: Path) -> None:
    deep = sock_dir / ("d" * 120)
    with pytest.raises(ControlServerError, match="cannot listen on"):
        trio.run(ControlServer(deep / "control.sock", FakeControlHandler()).serve)


CLIENT_AS_NOBODY = textwrap.dedent(
    """
    import socket, sys
    def recv(n):
        try:
            return s.recv(n)
        except ConnectionResetError:  # closed with our request unread: same as EOF here
            return b""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except PermissionError:
        print("EACCES")
        raise SystemExit(0)
    try:
        s.sendall(b'{"id":1,"cmd":"status"}\\n')
        s.shutdown(socket.SHUT_WR)  # one request: the server closes after answering
    except OSError:
        pass  # refused peers may be cut off already; the answer is still readable
    data = b""
    while not data.endswith(b"\\n"):
        chunk = recv(65536)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip())
    print("EOF" if not recv(1) else "MORE")
    """
)


def run_as_nobody(path: Path, extra_groups: list[int] | None = None) -> list[str]:
    assert SYSTEM_PYTHON is not None
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", CLIENT_AS_NOBODY, str(path)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=extra_groups or [],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


@as_root
def test_real_refusal_of_another_user(sock_dir: Path) -> None:
    """nobody is refused twice: by the file mode, and (mode opened up) by SO_PEERCRED."""
    path = sock_dir / "control.sock"
    with ServerThread(str(path), FakeControlHandler()) as running:
        assert running.server.allowed_uids == {0} and running.server.allowed_gids == {0}
        assert run_as_nobody(path) == ["EACCES"]
        os.chmod(path, 0o666)  # a careless admin: the peer check still holds
        line, end = run_as_nobody(path)
    response = json.loads(line)
    assert response["error"]["code"] == "forbidden"
    assert f"uid {NOBODY} is not allowed" in response["error"]["message"]
    assert "add yourself to group root" in response["error"]["message"]
    assert end == "EOF"


@as_root
def test_real_member_of_the_daemons_group_is_allowed(sock_dir: Path) -> None:
    """The group is found among the peer's supplementary groups (SO_PEERGROUPS)."""
    path = sock_dir / "control.sock"
    group = 4711
    with ServerThread(str(path), FakeControlHandler(), {0}, {group}):
        os.chown(path, 0, group)  # what the unit's group ownership gives: 0660 root:aicaller
        line, _ = run_as_nobody(path, extra_groups=[group])
    assert json.loads(line)["ok"] is True


CLIENT_CONNECTS = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.recv(1)  # hold the connection until the server has looked at it
    """
)


@as_root
def test_peer_groups_of_another_process_without_proc(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ProtectProc=invisible leaves us: the socket alone tells a peer's groups."""
    assert SYSTEM_PYTHON is not None
    path = sock_dir / "plain.sock"
    real_open = open

    def no_proc(file: Any, *args: Any, **kw: Any) -> Any:
        if str(file).startswith("/proc/"):
            raise PermissionError(file)
        return real_open(file, *args, **kw)

    monkeypatch.setattr("builtins.open", no_proc)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        os.chmod(path, 0o666)
        server.listen(1)
        child = subprocess.Popen(
            [SYSTEM_PYTHON, "-I", "-c", CLIENT_CONNECTS, str(path)],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[4711, 4712],
        )
        try:
            conn, _ = server.accept()
            with conn:
                groups = peer_groups(conn)
                conn.sendall(b"x")
        finally:
            assert child.wait(timeout=30) == 0
    assert groups == {4711, 4712}


def test_deeply_nested_line_is_a_bad_request_and_the_server_carries_on(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"

    async def main() -> list[dict[str, Any]]:
        async with serving(path, FakeControlHandler()):
            async with connect(path) as attacker, connect(path) as other:
                answers = [await attacker.ask(b"[" * 60_000 + b"\n")]
                answers.append(await attacker.ask(b'{"id":1,"cmd":' * 4_000 + b"\n"))
                answers.append(await attacker.ask(b'{"id":' + b"9" * 5_000 + b"}\n"))
                answers.append(await attacker.ask({"id": 2, "cmd": "status"}))
                answers.append(await other.ask({"id": 3, "cmd": "status"}))
            async with connect(path) as later:
                answers.append(await later.ask({"id": 4, "cmd": "status"}))
        return answers

    answers = trio.run(main)
    assert [a["error"]["code"] for a in answers[:3]] == ["bad_request"] * 3
    assert answers[0]["error"]["message"] == "request is nested too deeply"
    assert [(a["id"], a["ok"]) for a in answers[3:]] == [(2, True), (3, True), (4, True)]


def test_an_unexpected_error_closes_only_that_connection(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "control.sock"
    lookups: list[int] = []

    def groups(sock: object) -> set[int]:
        lookups.append(1)
        if len(lookups) == 1:
            raise RuntimeError("group database on fire")
        return {4711}

    async def main() -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
        kw: dict[str, Any] = {"allowed_uids": set(), "allowed_gids": {4711}}
        async with serving(path, handler, peer_groups=groups, **kw):
            async with connect(path) as unlucky:
                await unlucky.send({"id": 1, "cmd": "status"})
                dropped = await unlucky.read()
            async with connect(path) as next_client:
                after = await next_client.ask({"id": 2, "cmd": "status"})
                # A handler bug on a live connection: an error reply, the connection stays.
                deep: dict[str, Any] = {}
                for _ in range(100_000):
                    deep = {"x": deep}
                handler.status_result = deep
                internal = await next_client.ask({"id": 3, "cmd": "status"})
                handler.status_result = None
                assert (await next_client.ask({"id": 4, "cmd": "status"}))["ok"] is True
        return dropped, after, internal

    handler = DeepStatusHandler()
    caplog.set_level(logging.DEBUG, logger="aicallerd.control")
    dropped, after, internal = trio.run(main)
    assert dropped is None  # closed, no reply
    assert after["id"] == 2 and after["ok"] is True
    assert internal["id"] == 3 and internal["error"]["code"] == "internal"
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR and "unexpected" in r.msg]
    assert line.getMessage() == (
        f"control: closed the connection from uid {os.getuid()} pid {os.getpid()} "
        "after an unexpected RuntimeError: group database on fire"
    )


class DeepStatusHandler(FakeControlHandler):
    """Returns `status_result` from status when set (e.g. something JSON cannot encode)."""

    status_result: dict[str, Any] | None = None

    async def status(self) -> dict[str, Any]:
        if self.status_result is not None:
            return self.status_result
        return await super().status()
