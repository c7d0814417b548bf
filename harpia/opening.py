"""The end of an accepted WebSocket handshake, for a native route and an ASGI app alike.

Whoever decided to accept (the listener after the ``upgrade`` hook, or an ASGI app's
``websocket.accept``) calls, in order:

1. ``deflate_agreement(route, head)`` before making the connection: it may refuse the
   request (400, a malformed ``Sec-WebSocket-Extensions``);
2. ``accept_response(ws, agreement, ...)`` once the ``ServerWebSocket`` exists: it turns
   compression on and builds the 101 (``ValueError`` for a header that would split the
   response), before anything is written;
3. its own bookkeeping (the handshake is no longer pending), then ``hand_over(...)``: the
   101 goes out and the transport belongs to the engine from then on.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from . import _loop
from .connection import ServerWebSocket
from .deflate import DeflateAgreement, negotiate
from .handshake import parse_extension_offers
from .http_head import RequestHead
from .http_response import response_101
from .routing import WebSocketRoute

__all__ = ["OpeningHost", "deflate_agreement", "accept_response", "hand_over"]


class OpeningHost(Protocol):
    """What the opening needs from the listener that accepted the connection."""

    @property
    def cork(self) -> _loop.LoopContext | None:
        """Coalesces the writes of one loop turn."""

    def connection_opened(self, ws: ServerWebSocket[Any]) -> None: ...


def deflate_agreement(route: WebSocketRoute, head: RequestHead) -> DeflateAgreement | None:
    """The permessage-deflate settings agreed with this client, or None (not offered, not
    enabled on the route, or no acceptable offer).  Raises ``HandshakeError`` 400 for a
    malformed ``Sec-WebSocket-Extensions``."""
    deflate = route.options.deflate
    return None if deflate is None else negotiate(parse_extension_offers(head), deflate)


def accept_response(ws: ServerWebSocket[Any], agreement: DeflateAgreement | None, key: str,
                    subprotocol: str | None,
                    extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """Turn on the agreed compression for ``ws`` and return its 101 response."""
    options = ws.route.options
    deflate = options.deflate
    extensions = None
    if agreement is not None and deflate is not None:
        extensions = ws.extensions = agreement.response
        ws.enable_deflate(**agreement.engine_settings(deflate),
                          max_inflated_length=options.max_inflated_length or -1,
                          max_compression_ratio=options.max_compression_ratio or 0)
    return response_101(key, subprotocol=subprotocol, extensions=extensions,
                        extra_headers=extra_headers)


def hand_over(ws: ServerWebSocket[Any], transport: asyncio.Transport, host: OpeningHost,
              response: bytes, early: bytes) -> None:
    """Write the 101, give the transport to ``ws``, open it, and feed it ``early``: what
    the client sent behind its request while the handshake was being decided."""
    transport.write(response)
    transport.set_protocol(ws)
    # The engine learns what the transport holds only from pause_writing and
    # resume_writing.  Pausing as soon as the kernel leaves bytes behind makes that
    # exact ("not paused" means "empty"): with a higher mark, a burst that fits next
    # to a stale count lands on unseen bytes, and the buffer goes over the limit
    # without the -1 that arms drain (then every send is 0 and drain never comes).
    # high=1, not 0: asyncio's TLS transport pauses at size >= high, even when empty.
    transport.set_write_buffer_limits(1, 0)                    # high, low
    ws.attach_transport(transport, host.cork)
    host.connection_opened(ws)
    ws.handshake_completed()
    if early:
        ws.data_received(early)
    # Unless the engine paused it meanwhile (the early bytes filled the inbound backlog
    # of an async open handler, say): then the engine resumes it, and only it knows when.
    if not transport.is_closing() and not ws.reading_paused:
        transport.resume_reading()
