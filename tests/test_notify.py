import os
import socket
import time
import uuid

import pytest
import trio
import trio.testing

from aicallerd.notify import Notifier, socket_address, watchdog_interval, watchdog_loop


@pytest.fixture
def path_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def recv_all(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_no_notify_socket_is_a_noop():
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    n.close()


def test_exact_datagrams_on_a_path_socket(path_socket):
    path, sock = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready()
    assert sock.recv(4096) == b"READY=1"
    n.status("Listening on 127.0.0.1:5000, 0 calls")
    assert sock.recv(4096) == b"STATUS=Listening on 127.0.0.1:5000, 0 calls"
    n.status("two\nlines, caf\u00e9")
    assert sock.recv(4096) == "STATUS=two lines, caf\u00e9".encode()
    n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.ready("reloaded")
    assert sock.recv(4096) == b"READY=1\nSTATUS=reloaded"
    n.close()


def test_reloading_carries_monotonic_usec(path_socket):
    path, sock = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = sock.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    n.close()


def test_abstract_namespace_socket():
    name = f"aicaller-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled
        n.ready()
        assert sock.recv(4096) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_socket_address():
    assert socket_address("@x") == "\0x"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("vsock:2:1234") is None
    assert socket_address("@") is None


def test_unreachable_socket_disables_notifier(tmp_path):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert not n.enabled


def test_send_failure_is_reported_not_raised(path_socket):
    path, sock = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    sock.close()
    os.unlink(path)
    assert n.watchdog() is False
    assert n.watchdog() is False
    n.close()


def test_watchdog_interval():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "x"}) is None


def test_watchdog_loop_pings_at_the_interval(path_socket):
    path, sock = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(watchdog_loop, n, 15.0)
            # Started means the first ping went out before start() returned.
            assert recv_all(sock) == [b"WATCHDOG=1"]
            await trio.sleep(100)  # pings at 0, 15, ..., 90: 7, one already read
            nursery.cancel_scope.cancel()
        return trio.current_time()

    elapsed = trio.run(main, clock=clock)
    assert elapsed == 100
    assert recv_all(sock) == [b"WATCHDOG=1"] * 6
    n.close()


def test_watchdog_loop_without_systemd_is_harmless():
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main():
        with trio.move_on_after(60):
            await watchdog_loop(Notifier.from_env({}), 15.0)

    trio.run(main, clock=clock)
