"""harpia's exceptions: one tree, rooted at :class:`HarpiaError`.

    HarpiaError
    ├── ProtocolError            the peer broke RFC 6455; carries the close code
    │   ├── PayloadTooBig        1009: a frame or message over max_payload_length
    │   └── InvalidUTF8          1007: text that is not UTF-8
    ├── HandshakeError           the opening handshake failed; carries the HTTP status
    │   ├── Reject               raised by an ``upgrade`` hook to answer with a status
    │   └── ProxyProtocolError   a missing or malformed PROXY protocol header
    ├── ConnectionClosed         an operation on a connection that is closed
    │   └── ClientDisconnected   an ASGI send after the client left (also an OSError)
    ├── ConfigurationError       a route option or handler that cannot work (also a TypeError)
    ├── BackplaneError           the pub/sub backplane (Redis) cannot be reached
    └── LifespanError            an ASGI app's lifespan startup failed

Local mistakes by the caller (a bad argument to ``ws.close``, say) are plain
``ValueError``/``TypeError``, as in the standard library.
"""
from __future__ import annotations

from collections.abc import Mapping


class HarpiaError(Exception):
    """Root of every exception harpia raises on purpose."""


class ProtocolError(HarpiaError):
    """The peer violated the WebSocket protocol; ``code`` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class PayloadTooBig(ProtocolError):
    """A frame or a reassembled message is longer than ``max_payload_length``."""


class InvalidUTF8(ProtocolError):
    """A text message or a close reason is not valid UTF-8."""


class HandshakeError(HarpiaError):
    """The opening handshake was refused with HTTP ``status``."""

    def __init__(
        self,
        status: int,
        message: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}" if message else f"HTTP {status}")
        self.status = status
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


class Reject(HandshakeError):
    """Raise from an ``upgrade(request)`` hook to answer with an HTTP status instead of 101.

    ``Reject(401, "missing token")`` sends ``401`` with that body;
    ``headers`` are added to the response (``{"WWW-Authenticate": "Bearer"}``).
    """

    def __init__(
        self,
        status: int,
        body: str | bytes = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"Reject status must be a 4xx or 5xx HTTP status, got {status}")
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        super().__init__(status, text, headers)
        self.body = body.encode() if isinstance(body, str) else bytes(body)


class ConnectionClosed(HarpiaError):
    """The connection is closed (or closing) and cannot do what was asked."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"connection closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


class ConfigurationError(HarpiaError, TypeError):
    """A route option, handler or setting is wrong; the message names it."""


class BackplaneError(HarpiaError):
    """The cross-process pub/sub backplane failed (for instance Redis is unreachable)."""


class ClientDisconnected(ConnectionClosed, OSError):
    """An ASGI app sent on a connection the client already closed (an ``OSError`` as the ASGI
    spec asks)."""


class LifespanError(HarpiaError):
    """An ASGI app's lifespan startup failed: the server does not start."""


class ProxyProtocolError(HandshakeError):
    """A connection to a ``proxy_protocol=True`` listener did not start with a valid PROXY
    header; it is dropped without an answer."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)
