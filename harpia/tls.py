"""TLS settings: ``tls={"key": ..., "cert": ...}`` or an ``ssl.SSLContext``, as a context;
and the server side's TLS start on a connection already accepted."""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["make_ssl_context", "start_server_tls"]


def make_ssl_context(tls: Mapping[str, Any] | ssl.SSLContext | None) -> ssl.SSLContext | None:
    """``{"key": path, "cert": path}`` (optionally ``"passphrase"``, ``"ca"``) or a context."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    if not isinstance(tls, Mapping):
        raise ConfigurationError("tls must be a mapping with 'key' and 'cert', or an ssl.SSLContext")
    unknown = set(tls) - {"key", "cert", "passphrase", "ca"}
    if unknown:
        raise ConfigurationError(f"unknown tls option(s): {', '.join(sorted(unknown))}")
    if "cert" not in tls or "key" not in tls:
        raise ConfigurationError("tls needs both 'cert' and 'key' (paths to PEM files)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls["cert"]), str(tls["key"]), tls.get("passphrase"))
    if tls.get("ca"):
        context.load_verify_locations(str(tls["ca"]))
    # A client asking to renegotiate (TLS 1.2) gets a no_renegotiation alert: a new
    # handshake costs the server CPU at the client's will, for nothing a WebSocket needs.
    # OpenSSL 3 refuses client-initiated renegotiation by default, 1.1.1 does not.
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


async def start_server_tls(loop: asyncio.AbstractEventLoop, raw: asyncio.Transport,
                           protocol: asyncio.BaseProtocol, context: ssl.SSLContext,
                           timeout: float, hello: bytes = b"") -> asyncio.Transport:
    """``loop.start_tls`` on the server side, given ``hello``: what was already read off
    ``raw`` as plain bytes (the start of the client's handshake).

    uvloop starts reading as soon as ``connection_made`` returns (``pause_reading`` does
    nothing there), a loop turn before a task started from it can call start_tls: a
    ClientHello already waiting is read by the plain protocol and would never reach the
    TLS layer (the handshake would stall until the deadline).  ``timeout`` only keeps
    asyncio from waiting its own default (60 s)."""
    if hello:
        # Scheduled before start_tls's own callbacks: these bytes reach the TLS protocol
        # before its connection_made and before start_tls resumes reading.
        loop.call_soon(_feed_tls_layer, raw, hello)
    tls = await loop.start_tls(raw, protocol, context, server_side=True,
                               ssl_handshake_timeout=timeout)
    if tls is None:      # typed so by asyncio, for a transport that cannot do TLS
        raise ConnectionError("the connection cannot start TLS")
    return tls


def _feed_tls_layer(raw: asyncio.Transport, data: bytes) -> None:
    """Give ``data`` to the TLS protocol start_tls set on ``raw`` (asyncio's and uvloop's
    are both buffered protocols)."""
    tls_protocol = raw.get_protocol()
    get_buffer = getattr(tls_protocol, "get_buffer", None)
    buffer_updated = getattr(tls_protocol, "buffer_updated", None)
    if raw.is_closing() or get_buffer is None or buffer_updated is None:
        return
    view = memoryview(data)
    while view:
        buffer = memoryview(get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        buffer_updated(size)
        view = view[size:]
