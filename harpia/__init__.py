"""harpia: a fast WebSocket server for Python, with a small API in the style of Bun.

    from harpia import harpia

    app = harpia()
    app.ws("/chat", {"message": lambda ws, message: ws.send(message)})

    if __name__ == "__main__":
        app.listen(port=3000)      # or: python -m harpia module:app --port 3000
"""
from __future__ import annotations

try:
    from . import _frames
except ImportError as exc:  # pragma: no cover - exercised by hand
    raise ImportError(
        "harpia's compiled frame engine (harpia._frames) is missing. Install harpia with "
        "'pip install .' (needs a C compiler and Cython), or build it in place with "
        "'python setup.py build_ext --inplace'."
    ) from exc

from ._frames import CLOSED, CLOSING, CONNECTING, OPEN
from .accept import Accept
from .app import App, harpia
from .backplane import Backplane, RedisBackplane, RedisClusterBackplane, RedisSentinelBackplane
from .client import ClientWebSocket, connect
from .connection import ServerWebSocket
from .deflate import DeflateOptions
from .errors import (
    BackplaneError,
    ClientDisconnected,
    ConfigurationError,
    ConnectionClosed,
    HandshakeError,
    HarpiaError,
    InvalidUTF8,
    LifespanError,
    PayloadTooBig,
    ProtocolError,
    ProxyProtocolError,
    Reject,
)
from .http_head import Headers
from .http_response import Response
from .options import RouteOptions
from .request import Request
from .server import Listener

__version__ = "0.1.0"

__all__ = [
    "harpia",
    "App",
    "connect",
    "ClientWebSocket",
    "ServerWebSocket",
    "Request",
    "Response",
    "Headers",
    "Listener",
    "Backplane",
    "RedisBackplane",
    "RedisClusterBackplane",
    "RedisSentinelBackplane",
    "RouteOptions",
    "DeflateOptions",
    "Reject",
    "Accept",
    "ProxyProtocolError",
    "HarpiaError",
    "ProtocolError",
    "PayloadTooBig",
    "InvalidUTF8",
    "HandshakeError",
    "ConnectionClosed",
    "ConfigurationError",
    "BackplaneError",
    "ClientDisconnected",
    "LifespanError",
    "CONNECTING",
    "OPEN",
    "CLOSING",
    "CLOSED",
]
