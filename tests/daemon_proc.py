"""Start the real ``aicallerd`` as a subprocess, the way an operator would, for e2e tests.

Readiness is the daemon's own "ready:" log line (it is logged only after the engines are
warm and the socket listens), read from its stderr: no sleeps, no polling of ports.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DaemonProc:
    proc: subprocess.Popen
    config_path: Path
    state_dir: Path
    runtime_dir: Path
    port: int
    public_url: str
    auth_token: str
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue = field(default_factory=queue.Queue)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "calls.db"

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = READY_TIMEOUT) -> str:
        """Block until a log line containing ``needle`` appears (or the daemon dies)."""
        for line in self.lines:
            if needle in line:
                return line
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no log line with {needle!r} within {timeout}s") from None
            if line is None:
                raise AssertionError(
                    f"daemon exited ({self.proc.wait()}) before {needle!r}:\n"
                    + "\n".join(self.lines[-30:])
                )
            if needle in line:
                return line

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def write_config(path: Path, port: int, extra: str = "") -> None:
    path.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "https://aicaller.test"
max_concurrent_calls = 4

[twilio]
auth_token = "e2e-test-auth-token"
{extra}
"""
    )


def start_daemon(
    tmp: Path, extra_config: str = "", env: dict[str, str] | None = None, wait: bool = True
) -> DaemonProc:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = tmp / "aicaller.conf"
    write_config(config_path, port, extra_config)
    state_dir, runtime_dir = tmp / "state", tmp / "run"
    state_dir.mkdir(exist_ok=True)
    runtime_dir.mkdir(exist_ok=True)
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "aicallerd", "--config", str(config_path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=full_env,
    )
    d = DaemonProc(
        proc,
        config_path,
        state_dir,
        runtime_dir,
        port,
        "https://aicaller.test",
        "e2e-test-auth-token",
    )
    threading.Thread(target=d._pump, daemon=True).start()
    if wait:
        d.wait_for("ready:")
    return d
