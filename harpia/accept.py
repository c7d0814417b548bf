"""``harpia.Accept``: what an ``upgrade`` hook returns to add headers to the 101.

    def upgrade(request):
        session = new_session()
        return harpia.Accept(session, headers={"Set-Cookie": f"sid={session.id}; HttpOnly"})

As Bun's ``server.upgrade(req, {data, headers})``.  Header names must be HTTP tokens and
values latin-1 text without CR, LF or NUL (no response splitting); a bad one is caught
here, in the hook, so the client gets a 500 and the log names the hook.  The headers that
make the handshake (``Upgrade``, ``Connection``, ``Sec-WebSocket-*``) are harpia's own.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

__all__ = ["Accept"]

T = TypeVar("T")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_RESERVED = frozenset({"upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol",
                       "sec-websocket-extensions", "content-length", "transfer-encoding"})


class Accept(Generic[T]):
    """Accept the upgrade with ``data`` as ``ws.data`` and ``headers`` on the 101."""

    __slots__ = ("data", "headers")

    def __init__(self, data: T = None,  # type: ignore[assignment]
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self.data = data
        items = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        for name, value in items:
            _check(name, value)
        #: The extra response headers, in order (a name may repeat: two Set-Cookie).
        self.headers: tuple[tuple[str, str], ...] = tuple(items)

    def __repr__(self) -> str:
        return f"Accept({self.data!r}, headers={list(self.headers)!r})"


def _check(name: object, value: object) -> None:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"Accept: header name {name!r} is not an HTTP token")
    if name.lower() in _RESERVED:
        raise ValueError(f"Accept: header {name!r} is set by the handshake itself")
    if not isinstance(value, str):
        raise ValueError(f"Accept: the value of {name!r} must be a str, not {type(value).__name__}")
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"Accept: the value of {name!r} contains CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"Accept: the value of {name!r} is not latin-1 text") from None
