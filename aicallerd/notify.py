"""sd_notify for a trio daemon: readiness, status, reload, stop and the watchdog ping.

A thin wrapper over the `sdnotify` package. sdnotify already maps a leading `@` in
NOTIFY_SOCKET to the abstract namespace, but it reads `os.environ` itself, encodes as latin-1
(so a STATUS with any other character is silently dropped) and swallows every error; here the
address comes from the environ we are handed, text is UTF-8 and a failed send is logged once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

import sdnotify
import trio

log = logging.getLogger(__name__)


def socket_address(notify_socket: str) -> str | None:
    """The AF_UNIX address for a $NOTIFY_SOCKET value, or None if we cannot use it.

    `@name` is an abstract socket (leading NUL); anything not absolute (e.g. systemd 254's
    `vsock:`) is not ours to handle.
    """
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        return "\0" + notify_socket[1:]
    if notify_socket.startswith("/"):
        return notify_socket
    return None


class _Sd(sdnotify.SystemdNotifier):
    """sdnotify's notifier, connected to a given address and sending UTF-8 without blocking."""

    def __init__(self, address: str) -> None:
        self.debug = True
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            # Never block the event loop: if systemd's queue is full, drop this one ping.
            self.socket.setblocking(False)
            self.socket.connect(address)
        except OSError:
            self.socket.close()
            raise

    def notify(self, state: str) -> None:
        self.socket.send(state.encode("utf-8"))


class Notifier:
    """Sends sd_notify states; a no-op when not started by systemd (no NOTIFY_SOCKET)."""

    def __init__(self, sd: sdnotify.SystemdNotifier | None) -> None:
        self._sd = sd
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Notifier:
        value = environ.get("NOTIFY_SOCKET", "")
        if not value:
            return cls(None)
        address = socket_address(value)
        if address is None:
            log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX socket; not notifying", value)
            return cls(None)
        try:
            return cls(_Sd(address))
        except OSError as exc:
            log.warning("cannot connect to NOTIFY_SOCKET=%r: %s", value, exc)
            return cls(None)

    @property
    def enabled(self) -> bool:
        return self._sd is not None

    def notify(self, state: str) -> bool:
        """Send one datagram; False (logged once) if it could not be sent."""
        if self._sd is None:
            return False
        try:
            self._sd.notify(state)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify failed (%s); further failures are not logged", exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" if status is None else f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> bool:
        # A newline would start a new assignment in the datagram.
        return self.notify("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Start a reload; systemd waits for the next READY=1 (send it via ready())."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sd is not None:
            self._sd.socket.close()
            self._sd = None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec), or None if no watchdog is asked.

    WATCHDOG_PID, when set, names the process that must ping; if that is not us (a child that
    inherited the environment), we must not ping.
    """
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


async def watchdog_loop(
    notifier: Notifier,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping WATCHDOG=1 every `interval` seconds from the event loop, until cancelled.

    Living on the loop is the point: if the loop is blocked, pings stop and systemd restarts us.
    """
    notifier.watchdog()
    task_status.started()
    while True:
        await trio.sleep(interval)
        notifier.watchdog()
