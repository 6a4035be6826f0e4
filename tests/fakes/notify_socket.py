"""A stand-in for systemd's notification socket (``$NOTIFY_SOCKET``)."""

from __future__ import annotations

import queue
import re
import socket
import threading
import time
from dataclasses import dataclass, field


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
