"""A small synchronous client for aicallerd's control socket (one JSON object per line).

Every failure is a `CtlError` whose message is the one line a shell user should see and whose
`exit_code` is what aicallerctl exits with, so scripts can tell "not running" from "not
allowed" from "Twilio said no" without parsing text.
"""

from __future__ import annotations

import errno
import grp
import itertools
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aicallerd.control.protocol import (
    E_FORBIDDEN,
    E_INVALID_NUMBER,
    E_NO_SUCH_CALL,
    E_TWILIO_REFUSED,
    E_TWILIO_UNAVAILABLE,
    E_UNKNOWN_CONTACT,
    MAX_RESPONSE_LINE,
    LineSplitter,
    encode_request,
    parse_response,
)

EXIT_OK = 0
EXIT_DAEMON_ERROR = 1  # the daemon refused the request (reload failed, busy, internal...)
EXIT_USAGE = 2  # bad command line (argparse's own code)
EXIT_NOT_RUNNING = 3  # no socket, or nobody listening on it
EXIT_PERMISSION = 4  # socket not accessible, or the daemon refused our uid
EXIT_TWILIO = 5  # Twilio refused the call or could not be reached
EXIT_NOT_FOUND = 6  # unknown contact, invalid number, no such call
EXIT_PROTOCOL = 7  # the connection broke, timed out, or the answer made no sense

_EXIT_FOR_CODE = {
    E_FORBIDDEN: EXIT_PERMISSION,
    E_TWILIO_REFUSED: EXIT_TWILIO,
    E_TWILIO_UNAVAILABLE: EXIT_TWILIO,
    E_UNKNOWN_CONTACT: EXIT_NOT_FOUND,
    E_INVALID_NUMBER: EXIT_NOT_FOUND,
    E_NO_SUCH_CALL: EXIT_NOT_FOUND,
}


class CtlError(Exception):
    """One line for stderr and the exit code that goes with it."""

    def __init__(self, message: str, exit_code: int = EXIT_DAEMON_ERROR) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever came in
        self.exit_code = exit_code


class DaemonError(CtlError):
    """The daemon answered with an error; `code`/`details` are its machine-readable part."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, _EXIT_FOR_CODE.get(code, EXIT_DAEMON_ERROR))
        self.code = code
        self.details = dict(details or {})


def _socket_group(path: str) -> str:
    """The group that may use the socket (its file's group, else its directory's)."""
    for candidate in (path, os.path.dirname(path) or "."):
        try:
            gid = os.stat(candidate).st_gid
        except OSError:
            continue
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)
    return "aicaller"


class ControlClient:
    """One connection; `request` may be called repeatedly. Use as a context manager."""

    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._splitter = LineSplitter(MAX_RESPONSE_LINE)
        self._pending: list[bytes] = []
        self._ids = itertools.count(1)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise self._connect_error(exc) from None
        self._sock = sock

    def _connect_error(self, exc: OSError) -> CtlError:
        path = self.path
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return CtlError(f"aicallerd is not running (no socket at {path})", EXIT_NOT_RUNNING)
        if exc.errno == errno.ECONNREFUSED:
            return CtlError(
                f"aicallerd is not running (nothing listens on {path})", EXIT_NOT_RUNNING
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return CtlError(
                f"not allowed to use {path}: add yourself to group {_socket_group(path)} "
                "(then log in again)",
                EXIT_PERMISSION,
            )
        if isinstance(exc, TimeoutError):
            return CtlError(f"aicallerd does not accept connections on {path}", EXIT_PROTOCOL)
        return CtlError(f"cannot connect to {path}: {exc.strerror or exc}", EXIT_PROTOCOL)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(self, cmd: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its result; raise `CtlError` on any failure."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        rid = next(self._ids)
        try:
            self._sock.sendall(encode_request(cmd, args, rid))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon may have refused us already: its answer is waiting below
        except TimeoutError:
            raise CtlError("aicallerd is not reading its control socket", EXIT_PROTOCOL) from None
        line = self._read_line()
        try:
            response = parse_response(line)
        except ValueError as exc:
            raise CtlError(f"aicallerd sent an invalid answer: {exc}", EXIT_PROTOCOL) from None
        if response.error is not None:
            err = response.error
            raise DaemonError(err.code, err.message, err.details)
        if response.id != rid:
            raise CtlError(
                f"aicallerd answered request {response.id!r}, expected {rid}", EXIT_PROTOCOL
            )
        return response.result

    def _read_line(self) -> bytes:
        assert self._sock is not None
        while not self._pending:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise CtlError(
                    f"no answer from aicallerd within {self.timeout:g}s", EXIT_PROTOCOL
                ) from None
            except ConnectionResetError:
                data = b""
            items = self._splitter.feed(data) if data else self._splitter.close()
            for item in items:
                if not isinstance(item, bytes):
                    raise CtlError("aicallerd sent an oversized answer", EXIT_PROTOCOL)
                self._pending.append(item)
            if not data and not self._pending:
                raise CtlError("aicallerd closed the connection without answering", EXIT_PROTOCOL)
        return self._pending.pop(0)


def request(
    path: str, cmd: str, args: Mapping[str, Any] | None = None, timeout: float | None = 30.0
) -> dict[str, Any]:
    """Connect, ask once, disconnect."""
    with ControlClient(path, timeout) as client:
        return client.request(cmd, args)
