"""The control socket: a trio Unix-socket server speaking `aicallerd.control.protocol`.

Two locks on the door, because either alone can be got wrong by an admin: the socket file is
mode 0660 (owner and group only), and every peer is checked with SO_PEERCRED when it connects:
root, the daemon's own user, or a member of the daemon's group (its primary gid, or any
supplementary group from SO_PEERGROUPS) may talk to it; anybody else gets one ``forbidden``
line, the connection is closed, and the journal gets a warning naming them. The groups come
from the socket, not /proc: the unit's ProtectProc=invisible hides other users' processes.

`ControlServer.serve` owns a nursery with one task per connection; cancelling it closes
every connection and removes the socket file. Nothing a connection does escapes its task:
an unexpected error is logged on one line and closes that connection only, so a hostile or
buggy client can never take the daemon, and its live calls, down with it.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from aicallerd.control.protocol import (
    E_FORBIDDEN,
    E_INTERNAL,
    E_LINE_TOO_LONG,
    MAX_LINE,
    ControlError,
    ControlHandler,
    LineSplitter,
    LineTooLong,
    ProtocolError,
    Request,
    encode_error,
    encode_result,
    parse_request,
)

log = logging.getLogger("aicallerd.control")

SOCKET_MODE = 0o660
_READ_SIZE = 65536
# Linux >= 4.13 (asm-generic value; Python's socket module does not name it).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
# The most Python's getsockopt() reads: 256 gid_t, far more groups than an operator has.
_GROUPS_BUFFER = 1024
_MUTATING = frozenset({"call", "hangup", "reload"})  # logged at info: who did what


class ControlServerError(Exception):
    """The socket cannot be set up (path taken, not a socket, too long, no permission)."""


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: Any) -> PeerCred:
    """The connecting process's pid/uid/gid, as the kernel recorded them at connect()."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


def peer_groups(sock: Any) -> set[int]:
    """Supplementary groups of the process that connected `sock`, as of its connect().

    Empty (only uid and primary gid then count) if the kernel will not say: a peer in more
    than 256 groups, or a kernel older than 4.13; the journal says which.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_BUFFER)
    except OSError as exc:
        reason = "more than 256 groups" if exc.errno == errno.ERANGE else exc.strerror
        log.warning("cannot read the control peer's groups (SO_PEERGROUPS): %s", reason)
        return set()
    count = len(raw) // 4  # an array of gid_t (unsigned 32-bit)
    return set(struct.unpack(f"={count}I", raw[: count * 4]))


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


async def dispatch(handler: ControlHandler, request: Request) -> Mapping[str, Any]:
    """Run one checked request against the handler; the result is always an object."""
    args = request.args
    match request.cmd:
        case "status":
            return await handler.status()
        case "call":
            return await handler.call(args["target"], args["prompt"])
        case "calls":
            return {"calls": list(await handler.calls(args["limit"]))}
        case "transcript":
            return await handler.transcript(args["sid"])
        case "hangup":
            return await handler.hangup(args["sid"])
        case "reload":
            return await handler.reload()
    raise ProtocolError("unknown_command", f"unknown command {request.cmd!r}", request.id)


class ControlServer:
    """Serve `handler` on the Unix socket `path` to allowed peers.

    `allowed_uids` / `allowed_gids` default to {0, our uid} / {our gid}. `peer_groups` maps
    the connected socket to its peer's supplementary groups (injectable for tests).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: ControlHandler,
        allowed_uids: Iterable[int] | None = None,
        allowed_gids: Iterable[int] | None = None,
        *,
        peer_groups: Callable[[Any], set[int]] = peer_groups,
        max_line: int = MAX_LINE,
    ) -> None:
        self.path = os.fspath(path)
        self.handler = handler
        self.allowed_uids = set(allowed_uids) if allowed_uids is not None else {0, os.getuid()}
        self.allowed_gids = set(allowed_gids) if allowed_gids is not None else {os.getgid()}
        self.peer_groups = peer_groups
        self.max_line = max_line
        # Named in refusals: the group a user should join.
        self.group = ", ".join(group_name(g) for g in sorted(self.allowed_gids)) or "none"

    # -- access --------------------------------------------------------------------------

    def is_allowed(self, cred: PeerCred, sock: Any) -> bool:
        """Whether the peer of `sock` (credentials `cred`) may use the socket."""
        if cred.uid in self.allowed_uids or cred.gid in self.allowed_gids:
            return True
        return bool(self.peer_groups(sock) & self.allowed_gids)

    # -- socket file ---------------------------------------------------------------------

    def _clear_stale(self) -> None:
        """Remove a socket left by a crashed daemon; never a live one or a non-socket."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlServerError(f"{self.path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listens: stale
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
                raise ControlServerError(f"cannot check {self.path}: {exc.strerror}") from None
        else:
            raise ControlServerError(f"{self.path}: another process is already listening there")
        finally:
            probe.close()
        log.info("removing stale control socket %s", self.path)
        os.unlink(self.path)

    async def _bind(self) -> trio.socket.SocketType:
        self._clear_stale()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ControlServerError(f"cannot create {Path(self.path).parent}: {exc}") from None
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(self.path)
            # After bind: the file is created with the umask (0027 under the unit -> 0750,
            # which nobody can connect to), then opened up to the group on purpose.
            os.chmod(self.path, SOCKET_MODE)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc)
            raise ControlServerError(f"cannot listen on {self.path}: {reason}") from None
        return sock

    def _remove_socket_file(self, ino: int) -> None:
        """Unlink our socket file, unless someone else has replaced it meanwhile."""
        try:
            if os.lstat(self.path).st_ino == ino:
                os.unlink(self.path)
        except OSError:
            pass

    # -- serving -------------------------------------------------------------------------

    async def serve(self, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; `nursery.start` returns the socket path once it accepts."""
        sock = await self._bind()
        ino = os.lstat(self.path).st_ino
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                serve = partial(trio.serve_listeners, handler_nursery=nursery)
                await nursery.start(serve, self._connection, [listener])
                log.info("control socket listening on %s (group %s)", self.path, self.group)
                task_status.started(self.path)
        finally:
            self._remove_socket_file(ino)
            await trio.aclose_forcefully(listener)

    async def _connection(self, stream: trio.SocketStream) -> None:
        """One connection's task; it never raises (except Cancelled), whatever happens."""
        peer = "unknown peer"
        try:
            async with stream:
                cred = peer_credentials(stream.socket)
                peer = f"uid {cred.uid} pid {cred.pid}"
                await self._converse(stream, cred)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("control client went away")
        except Exception as exc:
            # A bug, or input nobody foresaw: this connection ends, every other one and
            # every call goes on. The traceback is for whoever debugs it.
            log.error(
                "control: closed the connection from %s after an unexpected %s: %.200s",
                peer,
                type(exc).__name__,
                exc,
            )
            log.debug("control: traceback of that error", exc_info=True)

    async def _converse(self, stream: trio.SocketStream, cred: PeerCred) -> None:
        if not self.is_allowed(cred, stream.socket):
            log.warning(
                "refused control connection from uid %d gid %d (pid %d): not an allowed user "
                "and not in group %s",
                cred.uid,
                cred.gid,
                cred.pid,
                self.group,
            )
            message = (
                f"uid {cred.uid} is not allowed to use {self.path}: "
                f"add yourself to group {self.group}"
            )
            details = {"uid": cred.uid, "group": self.group}
            await stream.send_all(encode_error(None, E_FORBIDDEN, message, details))
            return
        splitter = LineSplitter(self.max_line)
        while True:
            data = await stream.receive_some(_READ_SIZE)
            for item in splitter.feed(data) if data else splitter.close():
                await stream.send_all(await self._answer(item, cred))
            if not data:
                return

    async def _answer(self, item: bytes | LineTooLong, cred: PeerCred) -> bytes:
        """One request line -> one response line; never raises for a bad request."""
        if isinstance(item, LineTooLong):
            return encode_error(
                None, E_LINE_TOO_LONG, f"request line longer than {self.max_line} bytes"
            )
        try:
            request = parse_request(item)
        except ProtocolError as exc:
            return encode_error(exc.request_id, exc.code, exc.message)
        level = logging.INFO if request.cmd in _MUTATING else logging.DEBUG
        log.log(
            level, "control: uid %d pid %d: %s %s", cred.uid, cred.pid, request.cmd, _show(request)
        )
        try:
            result = await dispatch(self.handler, request)
        except ControlError as exc:
            log.log(level, "control: %s refused: %s: %s", request.cmd, exc.code, exc.message)
            return encode_error(request.id, exc.code, exc.message, exc.details)
        except Exception as exc:
            log.exception("control: %s failed", request.cmd)
            return encode_error(
                request.id,
                E_INTERNAL,
                f"{request.cmd} failed inside aicallerd ({type(exc).__name__}); see its log",
            )
        try:
            return encode_result(request.id, result)
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("control: %s returned a result that is not JSON: %s", request.cmd, exc)
            return encode_error(
                request.id, E_INTERNAL, f"{request.cmd} produced an unencodable result"
            )


def _show(request: Request) -> str:
    """Arguments for the log line; a prompt can be long, so only its length is logged."""
    shown = []
    for name, value in request.args.items():
        if value is None:
            continue
        if name == "prompt":
            shown.append(f"prompt=<{len(value)} chars>")
        else:
            shown.append(f"{name}={value}")
    return " ".join(shown)
