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

import jiwer

from aicallerctl.testcall import Target

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


def target(d: DaemonProc) -> Target:
    return Target(connect=d.base_url, public_url=d.public_url, auth_token=d.auth_token)


def normalize(text: str) -> str:
    return " ".join(
        "".join(c for c in text.lower() if c.isalnum() or c.isspace() or c == "'").split()
    )


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>")
