"""Stand-ins for outside services, served for real on 127.0.0.1 (stdlib http.server in a thread).

Real sockets keep the clients honest: connection reuse, chunked streaming, timeouts and
refused connections all behave as they would against the real service.
"""

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    client_port: int
    raw_body: bytes = field(repr=False, default=b"")


class FakeHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler with JSON and chunked-streaming helpers; routes to `fake.handle`."""

    protocol_version = "HTTP/1.1"  # keep-alive, so client connection reuse is exercised
    server: "_Server"
    served = 0  # requests answered on this connection (one handler per connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        path, _, query = self.path.partition("?")
        rec = Recorded(
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client_port=self.client_address[1],
            raw_body=raw,
        )
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(rec)
        if self.served == 0 and fake.connect_seconds:
            time.sleep(fake.connect_seconds)  # a new connection: TCP and TLS handshakes
        self.served += 1
        if fake.rtt_seconds:
            time.sleep(fake.rtt_seconds)  # the request's way up and the answer's way down
        try:
            fake.handle(self, rec)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _dispatch

    def send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_chunked(self, status: int, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self) -> None:
        """Cut the connection mid-response, as a crashed server or a broken network does."""
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: "LoopbackFake"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops a stream early resets its connection: normal, not a failure.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LoopbackFake:
    """Base: serve on 127.0.0.1 on a free port; subclasses implement `handle`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.release = threading.Event()  # set on stop: frees handlers told to stall
        # Simulated network: paid once per new connection, and once per request.
        self.connect_seconds = 0.0
        self.rtt_seconds = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, h: FakeHandler, rec: Recorded) -> None:
        raise NotImplementedError

    def start(self) -> "LoopbackFake":
        self._server = _Server(("127.0.0.1", 0), FakeHandler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._server is not None, "fake server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LoopbackFake":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
