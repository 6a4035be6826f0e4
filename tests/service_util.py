"""Helpers for the service tests (tests/test_service_*.py): the real daemon, as an operator
runs it, with a config of the test's choosing, driven through aicallerctl and the stand-in.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
from daemon_proc import DaemonProc, free_port

from aicallerctl.testcall import Target

AUTH_TOKEN = "service-test-auth-token"
PUBLIC_URL = "https://aicaller.test"


def launch(
    tmp: Path,
    config: str = "",
    *,
    env: dict[str, str] | None = None,
    wait: bool = True,
    port: int | None = None,
    public_url: str = PUBLIC_URL,
    journal: bool = False,
) -> DaemonProc:
    """Start ``python -m aicallerd`` with ``[server]``/``[twilio]`` basics plus ``config``.

    ``config`` may add keys to ``[server]`` and ``[twilio]`` (it is inserted under the
    matching header) or whole sections of its own. ``journal``: stderr is a pipe named by
    ``$JOURNAL_STREAM``, as journald's stream is under systemd.
    """
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    state_dir, runtime_dir = tmp / "state", tmp / "run"
    state_dir.mkdir(exist_ok=True)
    runtime_dir.mkdir(exist_ok=True)
    config_path = tmp / "aicaller.conf"
    config_path.write_text(render_config(port, config, public_url))
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TWILIO_AUTH_TOKEN", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC")
    }
    full_env.update(
        STATE_DIRECTORY=str(state_dir),
        RUNTIME_DIRECTORY=str(runtime_dir),
        PYTHONUNBUFFERED="1",
        **(env or {}),
    )
    stderr: int = subprocess.PIPE
    if journal:
        read_end, stderr = os.pipe()
        st = os.fstat(stderr)
        full_env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aicallerd", "--config", str(config_path)],
        stderr=stderr,
        stdout=subprocess.DEVNULL,
        env=full_env,
    )
    if journal:
        os.close(stderr)
        proc.stderr = os.fdopen(read_end, "rb")
    d = DaemonProc(proc, config_path, state_dir, runtime_dir, port, public_url, AUTH_TOKEN)
    threading.Thread(target=d._pump, daemon=True).start()
    if wait:
        d.wait_for("ready:")
    return d


def render_config(port: int, extra: str = "", public_url: str = PUBLIC_URL) -> str:
    """The test config: extra ``[server]``/``[twilio]`` lines go under their headers."""
    server, twilio, rest = [], [], []
    target = rest
    for line in extra.strip().splitlines():
        header = line.strip()
        if header in ("[server]", "[twilio]"):
            target = server if header == "[server]" else twilio
            continue
        if header.startswith("["):
            target = rest
        target.append(line)
    return "\n".join(
        [
            "[server]",
            f'listen = "127.0.0.1:{port}"',
            f'public_url = "{public_url}"',
            "max_concurrent_calls = 4",
            *server,
            "",
            "[twilio]",
            f'auth_token = "{AUTH_TOKEN}"',
            *twilio,
            "",
            *rest,
            "",
        ]
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


def target(d: DaemonProc) -> Target:
    return Target(connect=d.base_url, public_url=d.public_url, auth_token=d.auth_token)


def normalize(text: str) -> str:
    return " ".join(
        "".join(c for c in text.lower() if c.isalnum() or c.isspace() or c == "'").split()
    )


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>")


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
