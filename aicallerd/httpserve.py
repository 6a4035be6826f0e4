"""The HTTP port: hypercorn for the webhooks, the Media Stream served beside it.

One listening socket, as before. Each accepted connection's request line is read first: a
``GET`` of the stream route goes to `aicallerd.webstream.MediaStreamServer` (the hot path,
50 frames a second per call), everything else to hypercorn's own connection handler with
those bytes replayed in front. This is hypercorn's ``worker_serve`` with that one switch;
it uses hypercorn's per-connection classes directly, so pyproject pins hypercorn's minor
version.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, Framework, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from aicallerd.webstream import HEAD_SECONDS, MAX_RECV, MediaStreamServer

__all__ = ["serve"]


class _Replayed(trio.abc.HalfCloseableStream):
    """The connection with the bytes already read put back in front (hypercorn's handler
    reads ``.socket`` for the addresses; having no ``do_handshake``, it is plain TCP)."""

    def __init__(self, stream: trio.SocketStream, head: bytes) -> None:
        self._stream = stream
        self._head = head
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            await trio.lowlevel.checkpoint()
            return head
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _dispatch(
    streams: MediaStreamServer,
    http: Callable[[trio.SocketStream], Awaitable[None]],
    stream: trio.SocketStream,
) -> None:
    head = b""
    try:
        with trio.fail_after(HEAD_SECONDS):
            while (ours := streams.wants(head)) is None:
                data = await stream.receive_some(MAX_RECV)
                if not data:
                    break
                head += data
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
        ours = None
    if ours is None:  # hung up or stalled before a request line: nothing to answer
        await stream.aclose()
    elif ours:
        try:
            await streams.serve(stream, head)
        finally:
            await stream.aclose()
    else:
        await http(_Replayed(stream, head))


async def serve(
    app: Framework,
    config: Config,
    sock: socket.socket,
    streams: MediaStreamServer,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` and ``streams`` on the listening ``sock`` until ``shutdown_trigger``
    returns; then connections get ``config.graceful_timeout`` to finish."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        state = ConnectionState(lifespan_state.copy())
        http = partial(TCPServer, wrapped, config, context, state)
        async with trio.open_nursery() as connections:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            bind = f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
            await config.log.info(f"Running on {bind}")
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    partial(
                        trio.serve_listeners,
                        partial(_dispatch, streams, http),
                        [listener],
                        handler_nursery=connections,
                    )
                )
                task_status.started([bind])
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
