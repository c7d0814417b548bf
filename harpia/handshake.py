"""The server side of the RFC 6455 opening handshake, on a parsed request head.

Sans-I/O: :func:`check_websocket_request` validates a
:class:`~harpia.http_head.RequestHead` and returns the client's key,
:func:`accept_key` answers it, and the negotiation helpers pick a subprotocol,
check the ``Origin`` and parse the extension offers.  The listener writes the
answer with ``http_response.response_101`` or ``http_response.error_response``.
"""
from __future__ import annotations

import binascii
import re
from collections.abc import Collection, Sequence

from ._upgrade import accept_key_bytes
from .errors import HandshakeError
from .http_head import TOKEN_RE, RequestHead

__all__ = [
    "accept_key",
    "accept_key_bytes",
    "check_origin",
    "check_websocket_request",
    "is_websocket_upgrade",
    "parse_extension_offers",
    "parse_header_tokens",
    "select_subprotocol",
    "usual_websocket_key",
]

#: What a Host header may hold: reg-name / IPv4 / IP-literal, then ``:port``
#: (RFC 3986 §3.2.2).  Anything with ``/``, ``?``, ``#``, ``@``, spaces... is refused.
_HOST_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%\[\]:]+")


def parse_header_tokens(values: list[str]) -> list[str]:
    """Split comma-separated header values (across several lines) into their items.

    Items are stripped of spaces and tabs; empty items are dropped (RFC 9110
    §5.6.1).  Case is kept: callers compare ``item.lower()`` where the field is
    case-insensitive.
    """
    tokens: list[str] = []
    for value in values:
        if "," not in value:  # the common single-item case
            item = value.strip(" \t")
            if item:
                tokens.append(item)
            continue
        for item in value.split(","):
            item = item.strip(" \t")
            if item:
                tokens.append(item)
    return tokens


def _has_token(values: Sequence[str], token: str) -> bool:
    """Whether a comma-separated, case-insensitive header holds ``token`` (given lower-case)."""
    # Same splitting as parse_header_tokens, without building the list.
    for value in values:
        if "," not in value:
            if value.strip(" \t").lower() == token:
                return True
            continue
        for item in value.split(","):
            if item.strip(" \t").lower() == token:
                return True
    return False


def is_websocket_upgrade(head: RequestHead) -> bool:
    """Whether the request asks for a WebSocket upgrade (``Upgrade`` holds the token ``websocket``).

    Used to choose between treating a request as a (possibly broken) WebSocket
    handshake and answering it as plain HTTP or with 426.
    """
    return _has_token(head.headers.get_all("upgrade"), "websocket")


def check_websocket_request(head: RequestHead) -> str:
    """Validate a WebSocket opening handshake (RFC 6455 §4.2.1) and return its key.

    Raises :class:`HandshakeError`: 405 (with ``Allow: GET``) if the method is
    not GET; 400 if the request is not HTTP/1.1, lacks a single valid ``Host``,
    lacks ``Upgrade: websocket`` or ``Connection: upgrade``, or lacks exactly
    one ``Sec-WebSocket-Key`` that is base64 for 16 bytes; 426 (with
    ``Sec-WebSocket-Version: 13``) if ``Sec-WebSocket-Version`` is not 13.
    """
    key = usual_websocket_key(head)
    return key if key is not None else _check_slowly(head)


def usual_websocket_key(head: RequestHead) -> str | None:
    """The key of a valid WebSocket request with no repeated field (what clients send),
    else ``None``: then :func:`check_websocket_request` says what is wrong, if anything."""
    # Every connection comes through here: one lookup per field.  It accepts only what
    # the full checks accept (tests/test_handshake.py holds the two side by side).
    fields = head.headers.unique_fields()
    if fields is not None and head.method == "GET" and head.http_version == "HTTP/1.1":
        host = fields.get("host")
        upgrade = fields.get("upgrade")
        connection = fields.get("connection")
        key = fields.get("sec-websocket-key")
        if (host is not None and upgrade is not None and connection is not None
                and key is not None and len(key) == 24
                and fields.get("sec-websocket-version") == "13"
                and _HOST_RE.fullmatch(host)
                and _has_token((upgrade,), "websocket")
                and _has_token((connection,), "upgrade")
                and _is_key(key)):
            return key
    return None


def _is_key(key: str) -> bool:
    """Whether ``key`` is base64 for 16 bytes (a valid ``Sec-WebSocket-Key``)."""
    # 16 bytes are always 24 base64 characters ending in "==": checking the
    # length first skips decoding obviously wrong keys.
    try:
        return len(key) == 24 and len(binascii.a2b_base64(key.encode("ascii"), strict_mode=True)) == 16
    except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError
        return False


def _check_slowly(head: RequestHead) -> str:
    """check_websocket_request for any request: raises the first problem found."""
    if head.method != "GET":
        raise HandshakeError(
            405, f"method {head.method} not allowed for a WebSocket handshake, use GET", {"Allow": "GET"}
        )
    if head.http_version != "HTTP/1.1":
        raise HandshakeError(400, f"WebSocket handshake requires HTTP/1.1, got {head.http_version}")
    headers = head.headers
    hosts = headers.get_all("host")
    if not hosts:
        raise HandshakeError(400, "missing Host header")
    if len(hosts) > 1:
        raise HandshakeError(400, "more than one Host header")
    if not _HOST_RE.fullmatch(hosts[0]):
        raise HandshakeError(400, "invalid Host header")
    upgrade = headers.get_all("upgrade")
    if not upgrade:
        raise HandshakeError(400, "missing Upgrade header")
    if not _has_token(upgrade, "websocket"):
        raise HandshakeError(400, "Upgrade header does not include websocket")
    connection = headers.get_all("connection")
    if not connection:
        raise HandshakeError(400, "missing Connection header")
    if not _has_token(connection, "upgrade"):
        raise HandshakeError(400, "Connection header does not include upgrade")
    keys = headers.get_all("sec-websocket-key")
    if not keys:
        raise HandshakeError(400, "missing Sec-WebSocket-Key header")
    if len(keys) > 1:
        raise HandshakeError(400, "more than one Sec-WebSocket-Key header")
    key = keys[0]
    if not _is_key(key):
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header: not base64 for 16 bytes")
    versions = headers.get_all("sec-websocket-version")
    if versions != ["13"]:
        # RFC 6455 §4.4: say which version we speak.  RFC 9110 §15.5.22: a 426
        # carries an Upgrade header.
        message = (
            "missing Sec-WebSocket-Version header"
            if not versions
            else f"unsupported Sec-WebSocket-Version {', '.join(versions)[:50]}, only 13 is supported"
        )
        raise HandshakeError(426, message, {"Sec-WebSocket-Version": "13", "Upgrade": "websocket"})
    return key


def accept_key(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for ``key``: base64(SHA-1(key + GUID))."""
    return accept_key_bytes(key).decode("ascii")


def select_subprotocol(head: RequestHead, supported: Sequence[str] | None) -> str | None:
    """Pick the subprotocol to answer with from the client's ``Sec-WebSocket-Protocol`` offers.

    The server's preference wins: the first entry of ``supported`` that the
    client offered.  Returns ``None`` if ``supported`` is ``None`` or empty, if
    the client offered nothing, or if nothing matches.  Names are compared
    case-sensitively, as most WebSocket implementations do.
    """
    if not supported:
        return None
    values = head.headers.get_all("sec-websocket-protocol")
    if not values:
        return None
    offered = set(parse_header_tokens(values))
    for name in supported:
        if name in offered:
            return name
    return None


def check_origin(head: RequestHead, allowed: Collection[str] | None) -> None:
    """Refuse the request with 403 unless its ``Origin`` is in ``allowed``.

    ``allowed`` ``None`` accepts anything, even no ``Origin``.  Otherwise
    exactly one ``Origin`` header must be present and equal one of ``allowed``
    (``"https://example.com"``, ``"http://localhost:8000"``, ``"null"``),
    ignoring case (an origin is scheme, host and port, all case-insensitive).
    """
    if allowed is None:
        return
    origins = head.headers.get_all("origin")
    if not origins:
        raise HandshakeError(403, "origin not allowed: missing Origin header")
    if len(origins) > 1:
        raise HandshakeError(403, "origin not allowed: more than one Origin header")
    origin = origins[0].lower()
    for candidate in allowed:
        if candidate.lower() == origin:
            return
    raise HandshakeError(403, f"origin not allowed: {origins[0][:200]}")


def _unquote_token(text: str) -> str:
    """Unquote a quoted-string parameter value that must hold a token (RFC 6455 §9.1)."""
    inner = text[1:-1]
    if "\\" in inner:
        out: list[str] = []
        i = 0
        n = len(inner)
        while i < n:
            ch = inner[i]
            if ch == "\\":
                i += 1
                if i == n:
                    raise HandshakeError(400, "malformed Sec-WebSocket-Extensions header: bad escape")
                ch = inner[i]
            out.append(ch)
            i += 1
        inner = "".join(out)
    if not TOKEN_RE.fullmatch(inner):
        raise HandshakeError(400, "malformed Sec-WebSocket-Extensions header: quoted value is not a token")
    return inner


def parse_extension_offers(head: RequestHead) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse ``Sec-WebSocket-Extensions`` (RFC 6455 §9.1) into ``[(name, [(param, value), ...]), ...]``.

    Offers keep the client's order, across header lines.  A parameter without
    ``=`` has value ``None``; quoted-string values are unquoted.  Empty list
    items are ignored (RFC 9110 §5.6.1); anything else malformed raises
    :class:`HandshakeError` 400.  Negotiating the offers is left to the caller.
    """
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    token = TOKEN_RE.fullmatch
    for value in head.headers.get_all("sec-websocket-extensions"):
        # Splitting on "," and ";" before looking at quotes is safe: a quoted
        # value must unquote to a token, and tokens contain neither, so any
        # input with a "," or ";" inside quotes is invalid and leaves an
        # unbalanced quote behind, which is rejected below.
        for element in value.split(","):
            name, *raw_params = element.split(";")
            name = name.strip(" \t")
            if not name:
                if raw_params or element.strip(" \t"):
                    raise HandshakeError(400, "malformed Sec-WebSocket-Extensions header: empty extension name")
                continue
            if not token(name):
                raise HandshakeError(400, f"malformed Sec-WebSocket-Extensions header: bad extension name {name[:50]!r}")
            params: list[tuple[str, str | None]] = []
            for raw in raw_params:
                pname, eq, pvalue = raw.partition("=")
                pname = pname.strip(" \t")
                if not token(pname):
                    raise HandshakeError(400, "malformed Sec-WebSocket-Extensions header: bad parameter name")
                if not eq:
                    params.append((pname, None))
                    continue
                pvalue = pvalue.strip(" \t")
                if len(pvalue) >= 2 and pvalue[0] == '"' and pvalue[-1] == '"':
                    pvalue = _unquote_token(pvalue)
                elif not token(pvalue):
                    raise HandshakeError(400, f"malformed Sec-WebSocket-Extensions header: bad value for {pname}")
                params.append((pname, pvalue))
            offers.append((name, params))
    return offers

