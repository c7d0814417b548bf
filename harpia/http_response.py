"""The HTTP responses a listener writes: the 101 that upgrades, and plain answers.

``response_101`` accepts a WebSocket handshake, ``response_http`` builds any other
complete response (refusals, ``app.get`` routes), ``error_response`` turns a
:class:`~harpia.errors.HandshakeError` into one.  Every header is checked against
response splitting.  :class:`Response` is what an ``app.get`` handler may return.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from .errors import HandshakeError, Reject
from ._upgrade import response_101 as usual_response_101
from .handshake import accept_key
from .http_head import TOKEN_RE

__all__ = ["Response", "response_101", "response_http", "error_response"]

_101_PREFIX = (
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: "
)

_REASONS = {int(s): s.phrase for s in HTTPStatus}

#: Headers response_http computes itself; callers' values for them are dropped.
_FRAMING_HEADERS = frozenset(("content-length", "transfer-encoding", "connection"))


def _check_header(name: str, value: str) -> None:
    """Refuse what would let a header inject lines into a response (response splitting)."""
    if not TOKEN_RE.fullmatch(name):
        raise ValueError(f"invalid HTTP header name {name!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"invalid HTTP header value for {name}: contains CR, LF or NUL")


def _encode_head(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("HTTP header names and values must be latin-1 text") from None


def response_101(
    key: str,
    *,
    subprotocol: str | None = None,
    extensions: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """Return the ``101 Switching Protocols`` response accepting the handshake with ``key``.

    ``subprotocol`` and ``extensions`` become ``Sec-WebSocket-Protocol`` and
    ``Sec-WebSocket-Extensions`` when given; ``extra_headers`` are appended as
    they are.  Raises ``ValueError`` for a header name that is not a token or a
    value containing CR, LF or NUL (response splitting) or non-latin-1 text.
    """
    if subprotocol is None and extensions is None and not extra_headers:
        return usual_response_101(key)      # in C, one bytes object
    parts = [_101_PREFIX, accept_key(key)]
    if subprotocol is not None:
        if not TOKEN_RE.fullmatch(subprotocol):
            raise ValueError(f"invalid subprotocol {subprotocol!r}: must be an HTTP token")
        parts.append("\r\nSec-WebSocket-Protocol: ")
        parts.append(subprotocol)
    if extensions is not None:
        _check_header("Sec-WebSocket-Extensions", extensions)
        parts.append("\r\nSec-WebSocket-Extensions: ")
        parts.append(extensions)
    for name, value in extra_headers:
        _check_header(name, value)
        parts.append(f"\r\n{name}: {value}")
    parts.append("\r\n\r\n")
    return _encode_head("".join(parts))


def response_http(
    status: int,
    body: bytes | str = b"",
    *,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    content_type: str = "text/plain; charset=utf-8",
    keep_alive: bool = False,
    head_only: bool = False,
) -> bytes:
    """Return a complete HTTP/1.1 response: status line, headers, body.

    ``body`` as ``str`` is sent as UTF-8.  Adds ``Content-Type`` (when there
    is a body and ``headers`` has none), ``Content-Length`` (except for 1xx,
    204 and 304, which have no body) and ``Connection: close`` unless
    ``keep_alive`` (``Upgrade, close`` when ``headers`` holds an ``Upgrade``,
    as RFC 9110 §7.8 requires).  ``Content-Length``, ``Transfer-Encoding`` and
    ``Connection`` in ``headers`` are ignored: framing is computed here.
    ``head_only`` sends the headers the body would get but not the body (for
    HEAD).  Raises ``ValueError`` for a bad status, a body on a status that
    has none, or a header that is not a token or contains CR/LF/NUL.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"invalid HTTP status {status}")
    payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    bodiless = status < 200 or status == 204 or status == 304
    if bodiless and payload:
        raise ValueError(f"HTTP status {status} cannot have a body")
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
    has_content_type = False
    upgrade = False
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        _check_header(name, value)
        lower = name.lower()
        if lower in _FRAMING_HEADERS:
            continue
        if lower == "content-type":
            has_content_type = True
        elif lower == "upgrade":
            upgrade = True
        lines.append(f"{name}: {value}")
    if payload and not has_content_type:
        _check_header("Content-Type", content_type)
        lines.append(f"Content-Type: {content_type}")
    if not bodiless:
        lines.append(f"Content-Length: {len(payload)}")
    if keep_alive:
        if upgrade:
            lines.append("Connection: Upgrade")
    else:
        lines.append("Connection: Upgrade, close" if upgrade else "Connection: close")
    lines.append("\r\n")
    head = _encode_head("\r\n".join(lines))
    return head if head_only or not payload else head + payload


def error_response(error: HandshakeError) -> bytes:
    """Return the HTTP response for a failed handshake: its status, headers and message.

    The body is the message plus a newline (the reason phrase if there is no
    message).  A :class:`~harpia.errors.Reject` body is sent exactly as given.
    """
    if isinstance(error, Reject):
        body: bytes | str = error.body
    else:
        body = (error.message or _REASONS.get(error.status, "")) + "\n"
    return response_http(error.status, body, headers=error.headers)


class Response:
    """A plain HTTP answer from an ``app.get`` handler."""

    __slots__ = ("body", "status", "headers", "content_type")

    def __init__(
        self,
        body: str | bytes = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = dict(headers or {})
        self.content_type = content_type


def refuse(transport: asyncio.Transport, response: bytes, failures: Counter[int]) -> None:
    """Answer a handshake with ``response`` (an error counts in ``failures`` by status), close."""
    status = int(response[9:12])
    if status >= 400:
        failures[status] += 1
    if not transport.is_closing():
        transport.write(response)
        transport.close()
