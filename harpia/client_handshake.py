"""Sans-I/O client side of the RFC 6455 opening handshake.

:func:`parse_url` turns ``ws://``/``wss://`` URLs into a :class:`Target`;
:class:`ClientHandshake` writes the upgrade request, reads the server's response head
(and, on a refusal, a bounded body) from the bytes it is fed, and checks the answer as
RFC 6455 section 4.1 requires: status 101, ``Upgrade: websocket``, ``Connection: upgrade``,
the ``Sec-WebSocket-Accept`` of our key, and a subprotocol and extensions among those we
offered.  Every failure is a :class:`~harpia.errors.HandshakeError` carrying the response's
status (0 when the response is not HTTP at all) and a readable message.

Nothing here touches a socket: ``harpia.client`` feeds it what the transport reads.
"""
from __future__ import annotations

import base64
import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from .errors import HandshakeError
from .handshake import accept_key_bytes
from .http_head import Headers

__all__ = ["Target", "parse_url", "ClientHandshake", "HandshakeResult", "DeflateResponse",
           "REDIRECT_STATUSES"]

#: A response head longer than this is refused (servers send a few hundred bytes).
MAX_HEAD_SIZE = 16 * 1024
#: A refusal's body is read up to this many bytes: enough for an error message.
MAX_BODY_SIZE = 64 * 1024
#: More header lines than this is not a WebSocket server talking.
MAX_HEADERS = 256

REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WINDOW_BITS = re.compile(r"[89]|1[0-5]")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a ``ws://`` or ``wss://`` URL points."""

    url: str
    secure: bool
    host: str            # for the socket: an IPv6 literal without brackets
    port: int
    resource: str        # path and query, as sent in the request line
    host_header: str     # as sent in ``Host``: brackets around IPv6, port unless default

    def __hash__(self) -> int:
        # The URL decides the rest, and Python keeps a str's hash: a cached offer is found
        # without hashing six fields on every connect.
        return hash(self.url)


def parse_url(url: str) -> Target:
    """Split a WebSocket URL; ``ValueError`` names what is wrong with it."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    return _parse_url(url)


# A client connects to the same few URLs over and over: split each once.
@functools.lru_cache(maxsize=256)
def _parse_url(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    if parts.fragment or "#" in url:
        raise ValueError(f"a WebSocket URL has no fragment: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in a WebSocket URL are not supported; send an "
                         "Authorization header instead")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in WebSocket URL {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in WebSocket URL {url!r}") from exc
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    if port is None:
        port = default_port
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    if any(c in resource for c in " \r\n\t"):
        raise ValueError(f"whitespace in the path of WebSocket URL {url!r}")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    return Target(url, secure, host, port, resource, host_header)


def _check_header(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid HTTP header name {name!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid character in the value of header {name!r}")


def _split_tokens(values: list[str]) -> list[str]:
    return [item.strip(" \t") for value in values for item in value.split(",")
            if item.strip(" \t")]


@dataclass(frozen=True, slots=True)
class DeflateResponse:
    """The permessage-deflate parameters the server answered with (RFC 7692 section 7)."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int

    def engine_settings(self) -> dict[str, object]:
        """Keyword arguments of ``FrameEngine.enable_deflate`` for the client role."""
        return {
            "local_no_context_takeover": self.client_no_context_takeover,
            "remote_no_context_takeover": self.server_no_context_takeover,
            "local_max_window_bits": self.client_max_window_bits,
            "remote_max_window_bits": self.server_max_window_bits,
        }


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What one response was: an accepted upgrade, a redirect, or a refusal (raised)."""

    status: int
    #: The response head as received (status line and header lines, without the blank line).
    head: bytes
    subprotocol: str | None
    extensions: str | None
    deflate: DeflateResponse | None
    #: The URL to go to next, for a redirect status with a ``Location``.
    location: str | None
    #: Bytes after the 101's head: the first frames, already sent by the server.
    trailing: bytes

    @property
    def headers(self) -> Headers:
        """The response's header fields (parsed from ``head`` on each call)."""
        return _parse_head(self.head)[1]


#: What the client offers for permessage-deflate: the server may reset or shrink both
#: windows; offering ``client_max_window_bits`` lets it ask us for a smaller one.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


@dataclass(frozen=True, slots=True)
class _Offer:
    """What a client asks for, checked, and its request bytes around the (fresh) key."""

    subprotocols: list[str]
    extra_headers: list[tuple[str, str]]
    per_message_deflate: bool
    before_key: bytes
    after_key: bytes


def _offer(target: Target, subprotocols: tuple[str, ...], headers: tuple[tuple[str, str], ...],
           per_message_deflate: bool) -> _Offer:
    for name in subprotocols:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid subprotocol name {name!r}")
    for pair in headers:
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"header names and values must be str, not {pair!r:.80}")
    return _checked_offer(target, subprotocols, headers, per_message_deflate)


# Connections to one URL with the same options share one offer: the checks and the request
# text are done once, each connection only adds its key.
@functools.lru_cache(maxsize=256)
def _checked_offer(target: Target, subprotocols: tuple[str, ...],
                   headers: tuple[tuple[str, str], ...], per_message_deflate: bool) -> _Offer:
    for name, value in headers:
        _check_header(name, value)
    given = {name.lower() for name, _ in headers}
    lines = [f"GET {target.resource} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {target.host_header}")
    lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: "]
    before_key = "\r\n".join(lines)
    after = ["", "Sec-WebSocket-Version: 13"]
    if subprotocols:
        after.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    if per_message_deflate:
        after.append(f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}")
    after += [f"{name}: {value}" for name, value in headers]
    after_key = "\r\n".join(after) + "\r\n\r\n"
    return _Offer(list(subprotocols), list(headers), per_message_deflate,
                  before_key.encode("latin-1"), after_key.encode("latin-1"))


class ClientHandshake:
    """One opening handshake: :meth:`request` to send, :meth:`feed` what comes back."""

    def __init__(
        self,
        target: Target,
        *,
        subprotocols: Sequence[str] | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        per_message_deflate: bool = False,
        key: str | None = None,
    ) -> None:
        pairs = () if headers is None else tuple(
            headers.items() if isinstance(headers, Mapping) else headers)
        offer = _offer(target, tuple(subprotocols or ()), pairs, bool(per_message_deflate))
        self.target = target
        self.subprotocols = offer.subprotocols
        self.extra_headers = offer.extra_headers
        self.per_message_deflate = offer.per_message_deflate
        self._offer = offer
        self.key = key or base64.b64encode(os.urandom(16)).decode("ascii")
        self._buffer = bytearray()
        self._head: tuple[int, bytes, int] | None = None    # status, head, body start
        self._accept_bytes: bytes | None = None             # the Sec-WebSocket-Accept due

    def request(self) -> bytes:
        """The upgrade request's bytes."""
        offer = self._offer
        return offer.before_key + self.key.encode("ascii") + offer.after_key

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes, eof: bool = False) -> HandshakeResult | None:
        """Take bytes from the server; the result once the answer is complete, else None.

        Raises :class:`HandshakeError` for a refusal (with its status, headers and body)
        and for a 101 that does not satisfy RFC 6455.
        """
        if not self._buffer and self._head is None:
            # The whole 101 in one read, as servers send it: checked in one pass when it
            # has the usual shape; anything else goes the long way below.
            end = data.find(b"\r\n\r\n")
            if 0 <= end <= MAX_HEAD_SIZE:
                result = self._usual_101(data, end)
                if result is not None:
                    return result
        self._buffer += data
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_SIZE:
                    raise HandshakeError(0, f"response head over {MAX_HEAD_SIZE} bytes")
                if eof:
                    raise HandshakeError(0, "connection closed before the response head "
                                            "was complete" if self._buffer else
                                            "connection closed without a response")
                return None
            if end > MAX_HEAD_SIZE:
                raise HandshakeError(0, f"response head over {MAX_HEAD_SIZE} bytes")
            head = bytes(self._buffer[:end])
            self._head = (_status(head), head, end + 4)
        status, head, start = self._head
        if status == 101:
            fields = _websocket_fields(head)
            if fields is None:     # not the usual shape: the full parser has the last word
                headers = _parse_head(head)[1]
                fields = {name: headers.get_all(name) for name in _WEBSOCKET_FIELDS}
            return self._accepted(fields, head, bytes(self._buffer[start:]))
        headers = _parse_head(head)[1]
        body = self._body(headers, start, eof)
        if body is None:
            return None
        location = headers.get("location")
        if status in REDIRECT_STATUSES and location:
            return HandshakeResult(status, head, None, None, None,
                                   urljoin(self.target.url, location.strip()), b"")
        text = body.decode("utf-8", "replace").strip()
        raise HandshakeError(status, text or "the server refused the WebSocket upgrade",
                             dict(headers.raw_items()))

    def _usual_101(self, data: bytes, end: int) -> HandshakeResult | None:
        """The result when ``data[:end]`` is the usual 101, else None (never an error).

        Usual: status 101, well-formed header lines, ``Upgrade: websocket``,
        ``Connection: upgrade`` and our ``Sec-WebSocket-Accept``, each once, and neither a
        subprotocol nor an extension.  The full check accepts all of these with the same
        result (tests/test_client_handshake.py holds the two side by side)."""
        head = data[:end]
        if _USUAL_HEAD.fullmatch(head) is None or head.count(b"\n") > MAX_HEADERS:
            return None
        fields = _USUAL_FIELDS.findall(head)
        if len(fields) != 3:
            return None
        seen = 0
        for name, value in fields:
            name = name.lower()
            value = value.strip(b" \t")
            if name == b"upgrade" and value.lower() == b"websocket":
                seen |= 1
            elif name == b"connection" and value.lower() == b"upgrade":
                seen |= 2
            elif name == b"sec-websocket-accept" and value == self._accept():
                seen |= 4
            else:
                return None
        if seen != 7:
            return None
        return HandshakeResult(101, head, None, None, None, None, data[end + 4:])

    def _accept(self) -> bytes:
        accept = self._accept_bytes
        if accept is None:
            accept = self._accept_bytes = accept_key_bytes(self.key)
        return accept

    def _body(self, headers: Headers, start: int, eof: bool) -> bytes | None:
        """The refusal's body once complete (bounded; the rest is not waited for)."""
        have = len(self._buffer) - start
        length = headers.get("content-length")
        if length is not None and length.strip().isdigit():
            want = min(int(length), MAX_BODY_SIZE)
            if have >= want or eof:
                return bytes(self._buffer[start:start + want])
            return None
        if have >= MAX_BODY_SIZE or eof:
            return bytes(self._buffer[start:start + MAX_BODY_SIZE])
        return None

    def _accepted(self, fields: dict[str, list[str]], head: bytes,
                  trailing: bytes) -> HandshakeResult:
        upgrade = fields.get("upgrade", [])
        if not (len(upgrade) == 1 and upgrade[0].lower() == "websocket"):
            upgrade = _split_tokens(upgrade)
        if [u.lower() for u in upgrade] != ["websocket"]:
            raise HandshakeError(101, f"101 without 'Upgrade: websocket' (got {upgrade!r:.80})")
        connection = fields.get("connection", [])
        if not (len(connection) == 1 and connection[0].lower() == "upgrade") and \
                "upgrade" not in (c.lower() for c in _split_tokens(connection)):
            raise HandshakeError(101, "101 without 'Connection: upgrade'")
        accepts = fields.get("sec-websocket-accept", [])
        if len(accepts) != 1 or accepts[0].strip() != self._accept().decode("ascii"):
            raise HandshakeError(101, "wrong or missing Sec-WebSocket-Accept")

        protocols = fields.get("sec-websocket-protocol")
        protocols = _split_tokens(protocols) if protocols else []
        subprotocol = None
        if protocols:
            if len(protocols) > 1:
                raise HandshakeError(101, f"server chose several subprotocols: {protocols!r:.100}")
            subprotocol = protocols[0]
            if subprotocol not in self.subprotocols:
                raise HandshakeError(101, f"server chose subprotocol {subprotocol!r:.60}, "
                                          "which was not offered")

        values = fields.get("sec-websocket-extensions", [])
        extensions = ", ".join(values) if values else None
        deflate = None
        if extensions is not None:
            deflate = self._check_extensions(values)
        return HandshakeResult(101, head, subprotocol, extensions, deflate, None, trailing)

    def _check_extensions(self, values: list[str]) -> DeflateResponse | None:
        elements = [e for value in values for e in value.split(",") if e.strip(" \t")]
        if len(elements) > 1:
            raise HandshakeError(101, "server accepted more than one extension")
        name, *raw_params = elements[0].split(";")
        name = name.strip(" \t")
        if name.lower() != "permessage-deflate" or not self.per_message_deflate:
            raise HandshakeError(101, f"server accepted extension {name[:60]!r}, "
                                      "which was not offered")
        seen: set[str] = set()
        server_nct = client_nct = False
        server_bits = client_bits = 15
        for raw in raw_params:
            pname, eq, pvalue = raw.partition("=")
            pname = pname.strip(" \t").lower()
            pvalue = pvalue.strip(" \t")
            if len(pvalue) >= 2 and pvalue[0] == pvalue[-1] == '"':
                pvalue = pvalue[1:-1]
            if pname in seen:
                raise HandshakeError(101, f"permessage-deflate parameter {pname!r} twice")
            seen.add(pname)
            if pname in ("server_no_context_takeover", "client_no_context_takeover"):
                if eq:
                    raise HandshakeError(101, f"permessage-deflate parameter {pname!r} "
                                              "takes no value")
                if pname == "server_no_context_takeover":
                    server_nct = True
                else:
                    client_nct = True
            elif pname in ("server_max_window_bits", "client_max_window_bits"):
                if not _WINDOW_BITS.fullmatch(pvalue):
                    raise HandshakeError(101, f"bad permessage-deflate {pname} {pvalue[:20]!r}")
                if pname == "server_max_window_bits":
                    server_bits = int(pvalue)
                else:
                    client_bits = int(pvalue)
            else:
                raise HandshakeError(101, f"unknown permessage-deflate parameter {pname[:60]!r}")
        return DeflateResponse(server_nct, client_nct, server_bits, client_bits)


#: The header fields a 101 is checked by.
_WEBSOCKET_FIELDS = ("upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol",
                     "sec-websocket-extensions")
_WEBSOCKET_NAMES = frozenset(name.encode() for name in _WEBSOCKET_FIELDS)
_TOKEN_BYTES = re.compile(_TOKEN.pattern.encode())
#: A 101 head whose every header line is ``token:value`` (what ``_parse_head`` accepts,
#: less the lines holding a lone CR or LF, which go the long way).
_USUAL_HEAD = re.compile(rb"HTTP/1\.[01] 101(?: [^\r\n]*)?(?:\r\n" + _TOKEN_BYTES.pattern +
                         rb":[^\r\n]*)*")
#: The lines of such a head that the check looks at (their name and raw value).
_USUAL_FIELDS = re.compile(rb"\r\n(upgrade|connection|sec-websocket-(?:accept|protocol|"
                           rb"extensions)):([^\r\n]*)", re.IGNORECASE)


def _status(head: bytes) -> int:
    line_end = head.find(b"\r\n")
    first = head if line_end < 0 else head[:line_end]
    match = _STATUS_LINE.fullmatch(first)
    if match is None:
        raise HandshakeError(0, f"not an HTTP/1.1 response: {first[:80]!r}")
    return int(match.group(1))


def _websocket_fields(head: bytes) -> dict[str, list[str]] | None:
    """The fields a 101 is checked by (lower-case name -> values), without building the
    whole :class:`Headers`; None when a line is not ``name:value`` (``_parse_head`` then
    names the fault)."""
    lines = head.split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        return None
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN_BYTES.fullmatch(name) is None:
            return None
        name = name.lower()
        if name in _WEBSOCKET_NAMES:
            fields.setdefault(name.decode("ascii"), []).append(
                value.strip(b" \t").decode("latin-1"))
    return fields


def _parse_head(head: bytes) -> tuple[int, Headers]:
    lines = head.split(b"\r\n")
    status = _status(head)
    if len(lines) - 1 > MAX_HEADERS:
        raise HandshakeError(0, f"more than {MAX_HEADERS} header lines in the response")
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        text = name.decode("latin-1")
        if not colon or not _TOKEN.fullmatch(text):
            raise HandshakeError(0, f"malformed header line in the response: {line[:80]!r}")
        items.append((text, value.strip(b" \t").decode("latin-1")))
    return status, Headers(items)
