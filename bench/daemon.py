"""Start the real ``aicallerd`` for the benchmark: own temp config, own state, always stopped.

The config holds only what the benchmark must set (loopback port, public URL, an auth token,
enough call slots) plus any ``--set section.key=value`` overrides; everything else is the
embedded default. The environment is reduced to a whitelist so that variables like
``MAX_TOKENS`` or ``DONE_SPEAKING_SILENCE_DURATION_SECONDS`` in the caller's shell cannot
silently change what is measured. Readiness is the daemon's own "ready:" log line.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 300.0
PUBLIC_URL = "https://aicaller.bench"
_ENV_KEEP = ("PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")


class DaemonError(RuntimeError):
    """The daemon did not start (or died); the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_overrides(settings: list[str]) -> dict[str, dict[str, str]]:
    """``["turn.barge_in=false", ...]`` -> ``{"turn": {"barge_in": "false"}}`` (raw TOML values).

    A value that is not a TOML number, boolean, string or array is quoted as a string.
    """
    out: dict[str, dict[str, str]] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ValueError(f"--set wants section.key=value, got {item!r}")
        value = value.strip()
        literal = re.fullmatch(r"-?[0-9.]+|true|false|\".*\"|\[.*\]", value)
        out.setdefault(section, {})[name] = value if literal else f'"{value}"'
    return out


def render_config(port: int, token: str, max_calls: int, settings: list[str]) -> str:
    """The benchmark's config file: required keys plus overrides."""
    tables: dict[str, dict[str, str]] = {
        "server": {
            "listen": f'"127.0.0.1:{port}"',
            "public_url": f'"{PUBLIC_URL}"',
            "max_concurrent_calls": str(max_calls),
        },
        "twilio": {"auth_token": f'"{token}"'},
    }
    for section, values in toml_overrides(settings).items():
        tables.setdefault(section, {}).update(values)
    lines = ["# written by bench/daemon.py"]
    for section, values in tables.items():
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the daemon if the benchmark process dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Daemon:
    """A running aicallerd and everything the benchmark needs to reach it."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    config_path: Path
    env: dict[str, str]
    port: int
    auth_token: str
    lines: list[str] = field(default_factory=list)
    ready_line: str = ""
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        return PUBLIC_URL

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Block until the "ready:" line; DaemonError if the daemon exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DaemonError(
                    f"aicallerd not ready after {timeout:.0f}s; last log lines:\n{self.tail()}"
                ) from None
            if line is None:
                raise DaemonError(
                    f"aicallerd exited with status {self.proc.wait()} before it was ready; "
                    f"last log lines:\n{self.tail()}"
                )
            if "ready:" in line:
                self.ready_line = line
                return line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the daemon drains), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextlib.contextmanager
def running_daemon(
    max_calls: int = 16, settings: list[str] | None = None, keep_dir: bool = False
) -> Iterator[Daemon]:
    """Start aicallerd in a temp directory, wait for "ready:", stop it on the way out."""
    tmp = Path(tempfile.mkdtemp(prefix="aicaller-bench-"))
    port = free_port()
    token = "bench-" + secrets.token_hex(16)
    config_path = tmp / "aicaller.conf"
    config_path.write_text(render_config(port, token, max_calls, settings or []))
    state_dir, runtime_dir = tmp / "state", tmp / "run"
    state_dir.mkdir()
    runtime_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("LC_")}
    env.update(
        STATE_DIRECTORY=str(state_dir),
        RUNTIME_DIRECTORY=str(runtime_dir),
        PYTHONUNBUFFERED="1",
        ORT_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "aicallerd", "--config", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_die_with_parent,  # only a prctl() call between fork and exec
    )
    daemon = Daemon(proc, tmp, config_path, env, port, token)
    threading.Thread(target=daemon._pump, name="aicallerd-log", daemon=True).start()
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        code = daemon.stop()
        if daemon.ready_line and code not in (0, -signal.SIGTERM):
            print(f"bench: aicallerd exited with status {code}", file=sys.stderr)
        if not keep_dir:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
