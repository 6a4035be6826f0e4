"""Start the real ``aicallerd`` as a subprocess, the way an operator would: the one launcher of
the benchmark and of the tests that need a live daemon (tests import it as ``bench.daemon``).

Each daemon gets its own work directory (config, ``state/``, ``run/``) and a whitelisted
environment, so variables like ``MAX_TOKENS`` or ``TWILIO_AUTH_TOKEN`` in the caller's shell
cannot change what is measured or tested. Readiness is the daemon's own "ready:" log line
(logged only after the engines are warm and the socket listens), read from its stderr by a
thread: no sleeps, no polling of ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aicallerctl.testcall import Target

READY_TIMEOUT = 300.0
AUTH_TOKEN = "service-test-auth-token"
PUBLIC_URL = "https://aicaller.test"
_ENV_KEEP = ("PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")


class DaemonError(AssertionError):
    """The daemon did not start, died, or never logged a line; the message has its log tail.

    An AssertionError so that a test waiting on the log fails rather than errors.
    """


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_overrides(settings: list[str]) -> str:
    """``["turn.barge_in=false", ...]`` -> TOML text, one table per section.

    A value that is not a TOML number, boolean, string or array is quoted as a string.
    """
    tables: dict[str, list[str]] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ValueError(f"--set wants section.key=value, got {item!r}")
        value = value.strip()
        literal = re.fullmatch(r"-?[0-9.]+|true|false|\".*\"|\[.*\]", value)
        tables.setdefault(section, []).append(f"{name} = {value if literal else toml_str(value)}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in tables.items())


def toml_str(value: str) -> str:
    """A TOML basic string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(
    port: int,
    extra: str = "",
    public_url: str = PUBLIC_URL,
    *,
    auth_token: str = AUTH_TOKEN,
    max_calls: int = 4,
) -> str:
    """The daemon's config: the required ``[server]``/``[twilio]`` keys plus ``extra``.

    ``extra`` lines under a ``[server]`` or ``[twilio]`` header go under that header (a key
    given there replaces the base one); other tables follow as written.
    """
    server = {
        "listen": f'"127.0.0.1:{port}"',
        "public_url": f'"{public_url}"',
        "max_concurrent_calls": str(max_calls),
    }
    twilio = {"auth_token": toml_str(auth_token)}
    added: dict[str, list[str]] = {"[server]": [], "[twilio]": []}
    rest: list[str] = []
    target = rest
    for line in extra.strip().splitlines():
        header = line.strip()
        if header in added:
            target = added[header]
            continue
        if header.startswith("["):
            target = rest
        target.append(line)
    lines = ["# written by bench/daemon.py"]
    for header, base in (("[server]", server), ("[twilio]", twilio)):
        given = {line.partition("=")[0].strip() for line in added[header]}
        lines += ["", header, *(f"{k} = {v}" for k, v in base.items() if k not in given)]
        lines += added[header]
    return "\n".join([*lines, "", *rest, ""])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the daemon if the process that started it dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Daemon:
    """A running aicallerd, its log as it arrives, and what a client needs to reach it."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    env: dict[str, str]
    port: int
    public_url: str
    auth_token: str
    lines: list[str] = field(default_factory=list)
    ready_line: str = ""
    _eof: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def config_path(self) -> Path:
        return self.workdir / "aicaller.conf"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def runtime_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "calls.db"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def target(self) -> Target:
        """Where the Twilio stand-in should call this daemon."""
        from aicallerctl.testcall import Target

        return Target(connect=self.base_url, public_url=self.public_url, auth_token=self.auth_token)

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = READY_TIMEOUT) -> str:
        """The first log line (since start) containing ``needle``, waiting for it to appear.

        DaemonError if the daemon's stderr closes (it exited) or ``timeout`` passes first.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if needle in line:
                        return line
                seen = len(self.lines)
                if self._eof:
                    raise DaemonError(
                        f"aicallerd exited with status {self.proc.wait()} before logging "
                        f"{needle!r}; last log lines:\n{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DaemonError(
                        f"no aicallerd log line with {needle!r} within {timeout:g}s; "
                        f"last log lines:\n{self.tail()}"
                    )
                self._changed.wait(left)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Block until the "ready:" line (engines warm, sockets listening) and return it."""
        self.ready_line = self.wait_for("aicallerd: ready: ", timeout)
        return self.ready_line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` (SIGTERM: the daemon drains), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def launch(
    workdir: Path,
    config: str = "",
    *,
    env: dict[str, str] | None = None,
    wait: bool = True,
    port: int | None = None,
    public_url: str = PUBLIC_URL,
    auth_token: str = AUTH_TOKEN,
    max_calls: int = 4,
    journal: bool = False,
) -> Daemon:
    """Start ``python -m aicallerd`` in ``workdir`` with :func:`render_config` of ``config``.

    ``env`` adds to the whitelisted environment; ``wait``: return after the "ready:" line;
    ``journal``: stderr is a pipe named by ``$JOURNAL_STREAM``, as journald's stream is under
    systemd. The caller stops the daemon (:meth:`Daemon.stop`).
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state").mkdir(exist_ok=True)
    (workdir / "run").mkdir(exist_ok=True)
    (workdir / "aicaller.conf").write_text(
        render_config(port, config, public_url, auth_token=auth_token, max_calls=max_calls)
    )
    full_env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("LC_")}
    full_env.update(
        STATE_DIRECTORY=str(workdir / "state"),
        RUNTIME_DIRECTORY=str(workdir / "run"),
        PYTHONUNBUFFERED="1",
        ORT_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1",
        **(env or {}),
    )
    stderr: int = subprocess.PIPE
    if journal:
        read_end, stderr = os.pipe()
        st = os.fstat(stderr)
        full_env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aicallerd", "--config", str(workdir / "aicaller.conf")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=full_env,
        preexec_fn=_die_with_parent,  # only a prctl() call between fork and exec
    )
    if journal:
        os.close(stderr)
        proc.stderr = os.fdopen(read_end, "rb")
    daemon = Daemon(proc, workdir, full_env, port, public_url, auth_token)
    threading.Thread(target=daemon._pump, name="aicallerd-log", daemon=True).start()
    if wait:
        try:
            daemon.wait_ready()
        except BaseException:
            daemon.stop()
            raise
    return daemon


@contextlib.contextmanager
def running_daemon(
    max_calls: int = 16, settings: list[str] | None = None, keep_dir: bool = False
) -> Iterator[Daemon]:
    """The benchmark's daemon: a temp directory, a random auth token, ``--set`` overrides;
    ready on entry, stopped (and its directory removed unless ``keep_dir``) on the way out."""
    tmp = Path(tempfile.mkdtemp(prefix="aicaller-bench-"))
    daemon = launch(
        tmp,
        toml_overrides(settings or []),
        public_url="https://aicaller.bench",
        auth_token="bench-" + secrets.token_hex(16),
        max_calls=max_calls,
        wait=False,
    )
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        code = daemon.stop()
        if daemon.ready_line and code not in (0, -signal.SIGTERM):
            print(f"bench: aicallerd exited with status {code}", file=sys.stderr)
        if not keep_dir:
            shutil.rmtree(tmp, ignore_errors=True)
