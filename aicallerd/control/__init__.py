"""The control socket aicallerctl talks to: protocol (sans-I/O) and trio server.

The server is imported lazily, so a client (aicallerctl) can use the protocol without
paying for trio.
"""

from typing import Any

from aicallerd.control.protocol import (
    ControlError,
    ControlHandler,
    ProtocolError,
    Request,
    Response,
    parse_request,
    parse_response,
)

__all__ = [
    "ControlError",
    "ControlHandler",
    "ControlServer",
    "ControlServerError",
    "ProtocolError",
    "Request",
    "Response",
    "parse_request",
    "parse_response",
]


def __getattr__(name: str) -> Any:
    if name in ("ControlServer", "ControlServerError"):
        from aicallerd.control import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
