"""Sans-I/O HTTP/1.1 request parsing and the server side of the RFC 6455 opening handshake.

Nothing here touches a socket or an event loop: bytes go in, objects and bytes
come out.  The connection layer feeds what it reads to :class:`HttpRequestParser`,
validates the result with :func:`check_websocket_request`, and writes
:func:`response_101` (or :func:`error_response`) back.

This code runs once per connection, so it is written for speed: parsing uses
``bytes`` methods that run in C (``find``, ``split``, ``partition``,
``translate``) rather than regular expressions or the ``email``/``http.client``
parsers, and anything a typical handshake does not need is computed lazily.

Parsing decisions where HTTP leaves a choice (RFC 9112):

* A bare ``LF`` is accepted as a line terminator, like ``CRLF`` (RFC 9112 §2.2
  allows it; h11 and most servers do the same).  A bare ``CR`` is rejected: it
  is not a valid character anywhere in a request head.
* Empty lines before the request line are ignored (RFC 9112 §2.2), but they
  count towards ``max_head_size``.
* Obsolete line folding (a header line starting with a space or a tab) is
  rejected with 400, as RFC 9112 §5.2 allows; no browser sends it.
* Line lengths are measured without their line terminator; ``max_head_size``
  counts every byte of the head up to and including the terminating empty line.
* ``HTTP/1.0`` and ``HTTP/1.1`` are accepted by the parser (the WebSocket check
  then requires 1.1); any other well-formed ``HTTP/x.y`` gets 505, anything
  else 400.
"""
from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar, overload
from urllib.parse import parse_qsl

from .errors import HandshakeError, Reject

__all__ = [
    "Headers",
    "HttpRequestParser",
    "Request",
    "RequestHead",
    "accept_key",
    "check_origin",
    "check_websocket_request",
    "error_response",
    "is_websocket_upgrade",
    "parse_extension_offers",
    "parse_header_tokens",
    "response_101",
    "response_http",
    "select_subprotocol",
]

_T = TypeVar("_T")

#: RFC 6455 §1.3: the fixed GUID appended to the client's key.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# --- character classes -------------------------------------------------------
# Validation is ``data.translate(None, CLASS)``: it deletes every allowed byte
# in C, so a non-empty result means an invalid byte was present.  This is much
# faster than a regular expression or a Python-level loop.

#: tchar, RFC 9110 §5.6.2.
_TOKEN_BYTES = (
    b"!#$%&'*+-.^_`|~0123456789"
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
#: field-vchar / SP / HTAB (RFC 9110 §5.5); obs-text (0x80-0xFF) is allowed and
#: decoded as latin-1.  Excludes every control character, notably NUL, CR, LF.
_FIELD_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
#: VCHAR: what a request-target may contain (no spaces, no controls, ASCII only).
_VCHAR_BYTES = bytes(range(0x21, 0x7F))
#: Every control character but HTAB: what a head holds only as CRLF line breaks.
_HEAD_CONTROL_BYTES = bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
_DIGITS = b"0123456789"

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a Host header may hold: reg-name / IPv4 / IP-literal, then ``:port``
#: (RFC 3986 §3.2.2).  Anything with ``/``, ``?``, ``#``, ``@``, spaces... is refused.
_HOST_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%\[\]:]+")


# --- headers -----------------------------------------------------------------


class Headers(Mapping[str, str]):
    """HTTP header fields: case-insensitive, multi-valued, in the order received.

    ``headers["sec-websocket-key"]`` is the first value of that field;
    :meth:`get_all` returns every value; :meth:`raw_items` the fields as
    received, original case included.  Iteration yields each distinct name
    once, lower-cased, in order of first appearance.

    Only the list of ``(name, value)`` pairs is stored; the lower-case index
    used for lookups is built on first use.  Servers keep one of these per open
    connection, so they must stay small.
    """

    __slots__ = ("_items", "_index", "_multi")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        # lower-case name -> first value.  Most names occur once, so a second
        # dict holds the (rare) names that repeat instead of a list per name.
        self._index: dict[str, str] | None = None
        self._multi: dict[str, list[str]] | None = None

    def _build_index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        multi: dict[str, list[str]] | None = None
        for name, value in self._items:
            key = name.lower()
            if key in index:
                if multi is None:
                    multi = {}
                values = multi.get(key)
                if values is None:
                    multi[key] = [index[key], value]
                else:
                    values.append(value)
            else:
                index[key] = value
        self._index = index
        self._multi = multi
        return index

    def compact(self) -> None:
        """Drop the lookup index (rebuilt on next use): what an idle connection keeps."""
        self._index = None
        self._multi = None

    def __getitem__(self, name: str) -> str:
        """Return the first value of header ``name``; ``KeyError`` if absent."""
        index = self._index
        if index is None:
            index = self._build_index()
        try:
            return index[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, default: str, /) -> str: ...

    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: object = None, /) -> object:
        """Return the first value of header ``name``, or ``default``."""
        # Overridden because Mapping.get goes through a raised KeyError.
        index = self._index
        if index is None:
            index = self._build_index()
        return index.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        """Return every value of header ``name`` in the order received (``[]`` if absent)."""
        index = self._index
        if index is None:
            index = self._build_index()
        key = name.lower()
        multi = self._multi
        if multi is not None and key in multi:
            return list(multi[key])
        value = index.get(key)
        return [] if value is None else [value]

    def raw_items(self) -> list[tuple[str, str]]:
        """Return the ``(name, value)`` pairs as received, original case, repeats included."""
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        index = self._index
        if index is None:
            index = self._build_index()
        return iter(index)

    def __len__(self) -> int:
        index = self._index
        if index is None:
            index = self._build_index()
        return len(index)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index
        if index is None:
            index = self._build_index()
        return name.lower() in index

    def __eq__(self, other: object) -> bool:
        # Two Headers are equal when they hold the same fields in the same
        # order, values included, whatever the case of the names.  Against
        # another mapping, the Mapping rule applies (same names, first values).
        if isinstance(other, Headers):
            return len(self._items) == len(other._items) and all(
                a[1] == b[1] and a[0].lower() == b[0].lower() for a, b in zip(self._items, other._items)
            )
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping, like dict

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(slots=True)
class RequestHead:
    """A parsed HTTP request line and header fields.

    ``target`` is the request-target exactly as received; ``path`` and
    ``raw_query`` are split from it (still percent-encoded).  For an
    absolute-form target (``http://host/p?q``) ``path`` and ``raw_query`` are
    those of its path part.
    """

    method: str
    target: str
    path: str
    raw_query: str
    http_version: str
    headers: Headers


# --- the request parser ------------------------------------------------------


#: Known methods, bytes -> str: skips validating and decoding the usual ones.
_METHODS = {m.encode("ascii"): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


def _parse_request_line(line: bytes) -> tuple[str, str, str, str, str]:
    """Split and validate ``method SP request-target SP HTTP-version``."""
    parts = line.split(b" ")
    if len(parts) != 3:
        if len(parts) == 2 and parts[0] and parts[1]:
            raise HandshakeError(400, "missing HTTP version in request line")
        raise HandshakeError(400, "malformed request line")
    method, target, version = parts
    # The version is checked first so that an HTTP/2 preface ("PRI * HTTP/2.0")
    # gets the more helpful 505 rather than a complaint about its target.
    if version == b"HTTP/1.1":
        http_version = "HTTP/1.1"
    elif version == b"HTTP/1.0":
        http_version = "HTTP/1.0"
    elif (
        len(version) == 8
        and version.startswith(b"HTTP/")
        and version[5] in _DIGITS
        and version[6] == 0x2E
        and version[7] in _DIGITS
    ):
        raise HandshakeError(505, f"HTTP version {version.decode('ascii')} is not supported")
    else:
        raise HandshakeError(400, "malformed HTTP version in request line")
    method_s = _METHODS.get(method)
    if method_s is None:
        if not method or method.translate(None, _TOKEN_BYTES):
            raise HandshakeError(400, "invalid method in request line")
        method_s = method.decode("ascii")
    if not target or target.translate(None, _VCHAR_BYTES):
        raise HandshakeError(400, "invalid character in request target")
    target_s = target.decode("ascii")
    if target[0] == 0x2F:  # "/": origin-form, the usual case
        rest = target_s
    else:
        rest = _absolute_form_path(target_s)
    if "#" in rest:
        raise HandshakeError(400, "fragment in request target")
    path, _, raw_query = rest.partition("?")
    return method_s, target_s, path, raw_query, http_version


def _absolute_form_path(target: str) -> str:
    """Reduce ``scheme://authority/path?query`` to ``/path?query``; 400 for other forms."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https", "ws", "wss"):
        # "*" (asterisk-form), "host:port" (authority-form) and anything else.
        raise HandshakeError(400, f"request target must start with '/' (got {target[:100]!r})")
    cut = len(rest)
    for delimiter in "/?#":
        i = rest.find(delimiter)
        if 0 <= i < cut:
            cut = i
    if cut == 0:
        raise HandshakeError(400, "request target has an empty authority")
    remainder = rest[cut:]
    return remainder if remainder.startswith("/") else "/" + remainder


#: Header names seen before, as bytes -> str.  A hit skips validating and
#: decoding the name, and every connection shares one str object per name
#: instead of holding its own copy.  Seeded with what browsers and WebSocket
#: clients send; grows with other valid names up to a fixed size so that a
#: peer sending random names cannot make it grow without bound.
_HEADER_NAMES: dict[bytes, str] = {}
_HEADER_NAMES_MAX = 1024

for _name in (
    "Host", "Upgrade", "Connection", "Origin", "User-Agent", "Pragma", "Cache-Control",
    "Accept", "Accept-Encoding", "Accept-Language", "Cookie", "Authorization",
    "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol", "Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site",
    "Sec-Fetch-Storage-Access", "Sec-CH-UA", "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform",
    "Sec-GPC", "DNT", "Referer", "Priority", "X-Forwarded-For", "X-Forwarded-Proto",
    "X-Forwarded-Host", "X-Real-IP", "Forwarded", "Via", "Content-Length",
    "Content-Type", "Transfer-Encoding", "Te", "Expect",
):
    for _variant in (_name, _name.lower()):
        _HEADER_NAMES[_variant.encode("ascii")] = _variant
del _name, _variant


def _intern_header_name(name: bytes) -> str:
    """Decode a validated header name, remembering it while the cache has room."""
    name_s = name.decode("ascii")
    if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
        _HEADER_NAMES[name] = name_s
    return name_s


def _parse_header_line(line: bytes) -> tuple[str, str]:
    """Split and validate one non-empty ``name: value`` line."""
    name, colon, value = line.partition(b":")
    name_s = _HEADER_NAMES.get(name) if colon else None
    if name_s is None and (not name or not colon or name.translate(None, _TOKEN_BYTES)):
        # Slow path: work out which rule was broken, for a useful message.
        first = line[0]
        if first == 0x20 or first == 0x09:
            raise HandshakeError(400, "obsolete line folding in headers is not supported")
        if not colon:
            raise HandshakeError(400, "header line without a colon")
        if not name:
            raise HandshakeError(400, "empty header name")
        if name[-1] == 0x20 or name[-1] == 0x09:
            raise HandshakeError(400, "whitespace between header name and colon")
        raise HandshakeError(400, "invalid character in header name")
    value = value.strip(b" \t")
    if value.translate(None, _FIELD_VALUE_BYTES):
        raise HandshakeError(400, f"invalid character in value of header {name.decode('ascii')}")
    if name_s is None:
        name_s = _intern_header_name(name)
    return name_s, value.decode("latin-1")


class HttpRequestParser:
    """Incremental parser for one HTTP/1.1 request head (request line + headers).

    Call :meth:`feed` with bytes as they arrive, split anywhere; it returns a
    :class:`RequestHead` once the empty line ending the head has arrived, and
    ``None`` until then.  Whatever followed the head in that last chunk (a
    client may send its first frame right behind the request) is left in
    :attr:`trailing`.  A request body is not read: WebSocket upgrades have none.

    Errors raise :class:`HandshakeError` with the status to answer: 414 for a
    request line over ``max_request_line`` bytes; 431 for a header line over
    ``max_header_line`` bytes, more than ``max_headers`` header fields or a head
    over ``max_head_size`` bytes; 505 for an unsupported HTTP version; 400 for
    anything malformed.  Limits are checked as bytes arrive, so a peer can never
    make the parser buffer more than them.  After an error the parser is
    unusable; after the head it accepts no more data.
    """

    __slots__ = (
        "_max_request_line",
        "_max_header_line",
        "_max_headers",
        "_max_head_size",
        "_buf",
        "_scan",
        "_consumed",
        "_request",
        "_items",
        "_done",
        "_error",
        "trailing",
    )

    def __init__(
        self,
        *,
        max_request_line: int = 8192,
        max_header_line: int = 8192,
        max_headers: int = 128,
        max_head_size: int = 65536,
    ) -> None:
        self._max_request_line = max_request_line
        self._max_header_line = max_header_line
        self._max_headers = max_headers
        self._max_head_size = max_head_size
        self._buf = b""  # an incomplete line (never contains b"\n")
        self._scan = 0  # where the b"\n" search resumes in self._buf + data
        self._consumed = 0  # bytes of complete lines so far
        self._request: tuple[str, str, str, str, str] | None = None
        self._items: list[tuple[str, str]] = []
        self._done = False
        self._error: HandshakeError | None = None
        #: Bytes received after the end of the head, in the call that completed it.
        self.trailing = b""

    def feed(self, data: bytes) -> RequestHead | None:
        """Add received bytes; return the request head once complete, else ``None``.

        Raises :class:`HandshakeError` if the head is invalid or too large, and
        ``RuntimeError`` if called again after the head was returned.
        """
        if self._done:
            raise RuntimeError("HttpRequestParser.feed() called after the request head was complete")
        if self._error is not None:
            raise self._error
        try:
            if not self._consumed and not self._buf and data:  # nothing seen yet
                head = self._feed_whole(data)
                if head is not None:
                    return head
            return self._feed_lines(data)
        except HandshakeError as exc:
            self._error = exc
            raise

    def _feed_whole(self, data: bytes) -> RequestHead | None:
        """Fast path: the entire head is in the first chunk, valid, with CRLF line endings.

        This is what every browser and client library sends.  A few C-level
        passes over the whole head replace the per-line search and checks.
        On anything unusual (bare LF, a control character, a bad header name,
        a limit reached) it returns ``None`` without changing any state, and
        the general path re-reads ``data`` line by line and reports the error
        exactly as it would for the same bytes arriving one by one.  Errors in
        the request line itself are raised here directly: it is the first line
        and within every limit, so no other error could come before them.
        """
        first = data[0]
        if first == 0x0D or first == 0x0A:  # leading empty lines
            return None
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 > self._max_head_size:
            return None
        head = data[:end]
        lines = head.split(b"\r\n")
        count = len(lines) - 1
        # One pass over the whole head: deleting control characters, CR and LF
        # must remove exactly the CRLF pairs split() found.  Anything more is a
        # control character (so header values need no check of their own
        # below) or a bare CR or LF.
        if len(head.translate(None, _HEAD_CONTROL_BYTES)) != end - 2 * count:
            return None
        if count > self._max_headers:
            return None
        request_line = lines[0]
        if len(request_line) > self._max_request_line:
            return None
        method, target, path, raw_query, version = _parse_request_line(request_line)
        max_header_line = self._max_header_line
        names = _HEADER_NAMES
        items = []
        for i in range(1, count + 1):
            line = lines[i]
            if len(line) > max_header_line:
                return None
            name, colon, value = line.partition(b":")
            if not colon:
                return None
            name_s = names.get(name)
            if name_s is None:
                # Not a name seen before: validate it (this also catches an
                # empty name, whitespace before the colon and obs-fold).
                if not name or name.translate(None, _TOKEN_BYTES):
                    return None
                name_s = _intern_header_name(name)
            items.append((name_s, value.strip(b" \t").decode("latin-1")))
        self._done = True
        self.trailing = data[end + 4 :]
        return RequestHead(method, target, path, raw_query, version, Headers(items))

    def _feed_lines(self, data: bytes) -> RequestHead | None:
        """General path: take complete lines one at a time, keep the incomplete rest."""
        # Only an incomplete line is ever kept, so this copy is bounded by the
        # line limits even when a peer trickles bytes one at a time.
        buf = self._buf + data if self._buf else data
        pos = 0  # start of the current line in buf
        scan = self._scan  # bytes before this are known to hold no b"\n"
        max_head_size = self._max_head_size
        while True:
            nl = buf.find(b"\n", scan)
            if nl < 0:
                break
            n = nl - pos  # the line's bytes before its LF, CR included
            limit = self._max_request_line if self._request is None else self._max_header_line
            if n > limit or self._consumed + n >= max_head_size:
                error = self._limit_error(buf, pos, n)
                if error is not None:
                    raise error
            end = nl - 1 if n and buf[nl - 1] == 0x0D else nl
            line = buf[pos:end]
            self._consumed += n + 1
            pos = scan = nl + 1
            if self._request is None:
                if line:  # empty lines before the request line are ignored
                    self._request = _parse_request_line(line)
                continue
            if not line:
                self._done = True
                self._buf = b""
                self.trailing = buf[pos:]
                method, target, path, raw_query, version = self._request
                return RequestHead(method, target, path, raw_query, version, Headers(self._items))
            if len(self._items) >= self._max_headers:
                raise HandshakeError(431, "too many header fields")
            self._items.append(_parse_header_line(line))
        # Check the incomplete line now, before keeping it: a peer that never
        # sends a newline must not make us buffer more than the limits.
        rest = len(buf) - pos
        limit = self._max_request_line if self._request is None else self._max_header_line
        if rest > limit or self._consumed + rest >= max_head_size:
            error = self._limit_error(buf, pos, rest)
            if error is not None:
                raise error
        self._buf = buf[pos:]
        self._scan = rest
        return None

    def _limit_error(self, buf: bytes, pos: int, n: int) -> HandshakeError | None:
        """The limit error, if any, for the first ``n`` bytes of the line at ``buf[pos]``.

        Reports the error the byte-by-byte arrival of the same bytes would
        raise first, so the outcome never depends on how the bytes were split.
        After each byte ``k`` of an unfinished line arrives, the line is too
        long if it holds more than the limit (a final CR does not count: it may
        start a CRLF), and the head is too large if ``consumed + k`` reached
        ``max_head_size`` (an unfinished head will be at least one byte
        longer).  The line check comes first.
        """
        if self._request is None:
            limit = self._max_request_line
            line_error = HandshakeError(414, "request line too long")
        else:
            limit = self._max_header_line
            line_error = HandshakeError(431, "header line too long")
        # First k at which the line is too long: limit + 1, or one byte later
        # when that byte is a CR (which, being last, does not count yet).
        k_line = limit + 1
        if k_line <= n and buf[pos + limit] == 0x0D:
            k_line += 1
        # First k at which the head is too large (0: already after the previous line).
        k_head = self._max_head_size - self._consumed
        if k_line <= n and k_line <= k_head:
            return line_error
        if k_head <= n:
            return HandshakeError(431, "request head too large")
        return None


# --- the WebSocket checks ----------------------------------------------------


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


def _has_token(values: list[str], token: str) -> bool:
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
    # 16 bytes are always 24 base64 characters ending in "==": checking the
    # length first skips decoding obviously wrong keys.
    try:
        if len(key) != 24 or len(binascii.a2b_base64(key.encode("ascii"), strict_mode=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header: not base64 for 16 bytes") from None
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
    digest = hashlib.sha1(key.encode("latin-1") + WS_GUID).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


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
    if not _TOKEN_RE.fullmatch(inner):
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
    token = _TOKEN_RE.fullmatch
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


# --- responses ---------------------------------------------------------------

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
    if not _TOKEN_RE.fullmatch(name):
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
    parts = [_101_PREFIX, accept_key(key)]
    if subprotocol is not None:
        if not _TOKEN_RE.fullmatch(subprotocol):
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


# --- what the upgrade hook sees ----------------------------------------------


class Request:
    """The HTTP request behind a WebSocket handshake, as an ``upgrade(request)`` hook sees it.

    Attributes: ``method``, ``path`` (percent-encoded, as received),
    ``raw_query``, ``headers`` (:class:`Headers`), ``params`` (route
    parameters), ``remote_address`` (``(host, port)`` or ``None``), ``secure``
    (TLS); computed on first use: ``url`` (``ws://host/path?query``, ``wss://``
    when secure, host from the ``Host`` header) and ``query`` (name -> first
    value).
    """

    __slots__ = (
        "method",
        "path",
        "raw_query",
        "headers",
        "params",
        "remote_address",
        "secure",
        "_url",
        "_query",
    )

    def __init__(
        self,
        head: RequestHead,
        *,
        params: dict[str, str],
        remote_address: tuple[str, int] | None,
        secure: bool,
    ) -> None:
        self.method = head.method
        self.path = head.path
        self.raw_query = head.raw_query
        self.headers = head.headers
        self.params = params
        self.remote_address = remote_address
        self.secure = secure
        self._url: str | None = None
        self._query: dict[str, str] | None = None

    @property
    def url(self) -> str:
        """The absolute URL requested: ``ws://host/path?query`` (``wss://`` over TLS)."""
        url = self._url
        if url is None:
            scheme = "wss" if self.secure else "ws"
            host = self.headers.get("host", "")
            url = f"{scheme}://{host}{self.path}"
            if self.raw_query:
                url = f"{url}?{self.raw_query}"
            self._url = url
        return url

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, name -> first value, percent-decoded; blank values kept."""
        query = self._query
        if query is None:
            query = {}
            for name, value in parse_qsl(self.raw_query, keep_blank_values=True):
                query.setdefault(name, value)
            self._query = query
        return query

    def __repr__(self) -> str:
        target = f"{self.path}?{self.raw_query}" if self.raw_query else self.path
        return f"<Request {self.method} {target}>"
