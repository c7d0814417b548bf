"""Sans-I/O parsing of one HTTP/1.1 request head: :class:`HttpRequestParser`.

Nothing here touches a socket or an event loop: bytes go in, a
:class:`~harpia.http_head.RequestHead` comes out.  The listener feeds what it reads
to the parser; ``handshake`` then checks the head as a WebSocket opening handshake.

This code runs once per connection, so it is written for speed.  A head that
arrives whole in one read (what clients send) is read by ``harpia._upgrade`` in C,
which also finds the ``Sec-WebSocket-Key`` of a valid handshake on the way.  The
general path here takes everything else, line by line, and decides every error;
it uses ``bytes`` methods that run in C (``find``, ``partition``, ``translate``)
rather than regular expressions or the ``email``/``http.client`` parsers.

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

from ._upgrade import parse_request_head
from .errors import HandshakeError
from .http_head import Headers, RequestHead

__all__ = ["DEFAULT_LIMITS", "HttpRequestParser"]

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
_DIGITS = b"0123456789"


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


#: A parser's limits unless told otherwise, in ``parse_request_head``'s order: the request
#: line, a header line, the header count, the whole head.
DEFAULT_LIMITS = (8192, 8192, 128, 65536)


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
        "websocket_key",
    )

    def __init__(
        self,
        *,
        max_request_line: int = DEFAULT_LIMITS[0],
        max_header_line: int = DEFAULT_LIMITS[1],
        max_headers: int = DEFAULT_LIMITS[2],
        max_head_size: int = DEFAULT_LIMITS[3],
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
        #: The Sec-WebSocket-Key when the head came whole and is a valid opening handshake
        #: with each of its fields once (what ``usual_websocket_key`` returns for it), found
        #: while parsing; ``None`` otherwise, and then the handshake checks decide.
        self.websocket_key: str | None = None

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
                # Fast path: the whole head in the first chunk, as every client sends it,
                # read in C.  Anything unusual is left to the general path below, which
                # reads the same bytes and reports errors exactly as for any split.
                found = parse_request_head(data, self._max_request_line, self._max_header_line,
                                           self._max_headers, self._max_head_size)
                if found is not None:
                    head, end, self.websocket_key = found
                    self._done = True
                    self.trailing = data[end:]
                    return head
            return self._feed_lines(data)
        except HandshakeError as exc:
            self._error = exc
            raise

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

