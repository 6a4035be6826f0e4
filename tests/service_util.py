"""Helpers for the service tests (tests/test_service_*.py): the real daemon, as an operator
runs it, with a config of the test's choosing, driven through aicallerctl and the stand-in.
"""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon_proc import (  # noqa: F401  (re-exported for the service tests)
    AUTH_TOKEN,
    PUBLIC_URL,
    DaemonProc,
    free_port,
    launch,
    normalize,
    render_config,
    target,
    wer,
)


def socket_path(d: DaemonProc) -> str:
    return str(d.runtime_dir / "control.sock")


def ctl(d: DaemonProc, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``aicallerctl --socket <the daemon's> ARGS`` the way a shell user would."""
    return subprocess.run(
        [sys.executable, "-m", "aicallerctl", "--socket", socket_path(d), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """For conditions no event announces (a row in a file written by another process)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class NotifyListener:
    """A real ``NOTIFY_SOCKET``: an AF_UNIX datagram socket, read by a thread."""

    path: str
    datagrams: list[tuple[float, str]] = field(default_factory=list)
    _queue: queue.Queue = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            item = (time.monotonic(), data.decode())
            self.datagrams.append(item)
            self._queue.put(item)

    def wait_for(self, pattern: str, timeout: float = 60) -> tuple[float, str]:
        """The next datagram (not seen by an earlier wait) matching ``pattern`` (regex)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                seen = [d for _, d in self.datagrams][-10:]
                raise AssertionError(f"no datagram matching {pattern!r}; last: {seen}") from None
            if re.search(pattern, item[1]):
                return item

    def close(self) -> None:
        self.sock.close()
