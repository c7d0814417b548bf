# cython: language_level=3
"""The usual upgrade request in C: what every connection's handshake runs through.

``parse_request_head`` reads a request head that arrived whole in one read, the way every
browser and client library sends it, in one pass over its bytes: the request line, each
header field validated as it is split, and the fields a WebSocket handshake needs looked
at on the way.  It returns the :class:`~harpia.http_head.RequestHead`, where the head ends,
and the ``Sec-WebSocket-Key`` when the request is a valid opening handshake with each of
its fields once (what :func:`harpia.handshake.usual_websocket_key` would return), so the
server needs no second look at the headers.

It returns ``None`` for anything unusual: a head not yet complete or over a limit, a bare
CR or LF, a control character, a bad header name, line folding, an error in the request
line, an absolute-form target.  The general parser in ``http_parser`` then reads the same
bytes and answers them, with the error a peer sending them byte by byte would get; so
this code never decides an error, it only recognises the usual case.

``accept_key_bytes`` is ``Sec-WebSocket-Accept`` for a key, and ``response_101`` the usual
101 around it, both without a Python call.  ``pack_header_fields`` is what an open
connection keeps of its request head.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeLatin1
from libc.stdint cimport uint32_t
from libc.string cimport memcmp, memcpy

cdef extern from "Python.h":
    ctypedef struct PyTypeObject
    object PyType_GenericAlloc(PyTypeObject *type, Py_ssize_t nitems)
    object PyUnicode_New(Py_ssize_t size, unsigned int maxchar)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    int PyUnicode_KIND(object text)
    int PyUnicode_1BYTE_KIND
    const char *PyUnicode_1BYTE_DATA(object text)

cdef extern from "string.h" nogil:
    void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen)

cdef extern from "_ws_accept.h" nogil:
    enum: WS_ACCEPT_MAX_KEY
    void ws_accept(const char *key, size_t key_len, char *out)

import hashlib
from binascii import b2a_base64

from harpia.http_head import Headers, RequestHead

# Byte classes, one table each (filled once, at import).
cdef unsigned char TCHAR[256]      # tchar, RFC 9110 section 5.6.2: header names, methods
cdef unsigned char CONTROL[256]    # not allowed in a head line: controls but HTAB, and DEL
cdef unsigned char HOSTCHAR[256]   # what harpia.handshake accepts in Host
cdef unsigned char BASE64[256]     # the base64 alphabet, without padding

cdef void _fill(unsigned char *table, bytes members):
    cdef Py_ssize_t i
    for i in range(256):
        table[i] = 0
    for i in range(len(members)):
        table[<unsigned char>members[i]] = 1

_fill(TCHAR, b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_fill(CONTROL, bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f")
_fill(HOSTCHAR, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=%[]:")
_fill(BASE64, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")

# The fields a handshake looks at, by index into the per-head tables below.
cdef enum:
    F_HOST = 0
    F_UPGRADE = 1
    F_CONNECTION = 2
    F_KEY = 3
    F_VERSION = 4
    F_COUNT = 5

# Strings seen before, by their bytes: header names and the values most requests repeat
# (Upgrade, Connection, Host, User-Agent...).  A hit is no allocation, no decoding and no
# hashing, and every open connection holding that value in its head shares one object.  A
# direct-mapped table: a miss replaces the slot, so random values cannot grow it.
cdef enum:
    CACHE_SLOTS = 256           # a power of two
    CACHE_MAX_LENGTH = 64
cdef PyObject *cache[CACHE_SLOTS]

cdef str GET = "GET"
cdef str HTTP_11 = "HTTP/1.1"
cdef str HTTP_10 = "HTTP/1.0"
cdef str EMPTY = ""


cdef inline bint _same_lower(const char *s, Py_ssize_t n, const char *lower, Py_ssize_t m) noexcept:
    """Whether s[:n] is the lower-case ASCII ``lower`` in any case."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if n != m:
        return False
    for i in range(n):
        c = <unsigned char>s[i]
        if c >= 65 and c <= 90:
            c += 32
        if c != <unsigned char>lower[i]:
            return False
    return True


cdef int _field(const char *name, Py_ssize_t n) noexcept:
    """Which handshake field a header name is (F_COUNT: none of them)."""
    if _same_lower(name, n, b"host", 4):
        return F_HOST
    if _same_lower(name, n, b"upgrade", 7):
        return F_UPGRADE
    if _same_lower(name, n, b"connection", 10):
        return F_CONNECTION
    if _same_lower(name, n, b"sec-websocket-key", 17):
        return F_KEY
    if _same_lower(name, n, b"sec-websocket-version", 21):
        return F_VERSION
    return F_COUNT


cdef bint _has_token(const char *s, Py_ssize_t n, const char *token, Py_ssize_t m) noexcept:
    """Whether the comma-separated list s[:n] holds ``token`` (lower case), in any case."""
    cdef Py_ssize_t start = 0, start_i, end, i = 0
    while i <= n:
        if i == n or s[i] == b',':
            start_i = start
            end = i
            while start_i < end and (s[start_i] == b' ' or s[start_i] == b'\t'):
                start_i += 1
            while end > start_i and (s[end - 1] == b' ' or s[end - 1] == b'\t'):
                end -= 1
            if _same_lower(s + start_i, end - start_i, token, m):
                return True
            start = i + 1
        i += 1
    return False


cdef bint _is_key(const char *s, Py_ssize_t n) noexcept:
    """Whether s[:n] is base64 for 16 bytes: 22 characters of the alphabet, then ``==``."""
    cdef Py_ssize_t i
    if n != 24 or s[22] != b'=' or s[23] != b'=':
        return False
    for i in range(22):
        if not BASE64[<unsigned char>s[i]]:
            return False
    return True


cdef bint _all_in(const unsigned char *table, const char *s, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if not table[<unsigned char>s[i]]:
            return False
    return True


cdef str _latin1(const char *s, Py_ssize_t n):
    """s[:n] as text (latin-1: the bytes of a validated head line), from the cache if seen."""
    cdef uint32_t h = 2166136261u               # FNV-1a
    cdef Py_ssize_t i
    cdef PyObject *seen
    if n > CACHE_MAX_LENGTH:
        return PyUnicode_DecodeLatin1(s, n, NULL)
    for i in range(n):
        h = (h ^ <unsigned char>s[i]) * 16777619u
    i = (h ^ (h >> 16)) & (CACHE_SLOTS - 1)
    seen = cache[i]
    if (seen != NULL and PyUnicode_GET_LENGTH(<str>seen) == n
            and memcmp(PyUnicode_1BYTE_DATA(<str>seen), s, n) == 0):
        return <str>seen
    text = PyUnicode_DecodeLatin1(s, n, NULL)
    Py_INCREF(text)
    cache[i] = <PyObject *>text
    Py_XDECREF(seen)
    return text


cdef object _request_head(str method, str target, str path, str raw_query, str version,
                          list items):
    """RequestHead(..., Headers(items)) without running either class's Python __init__:
    allocated as ``object.__new__`` would (both are plain classes with slots), then each
    slot set."""
    headers = PyType_GenericAlloc(<PyTypeObject *>Headers, 0)
    headers._items = items
    headers._index = None
    headers._multi = None
    head = PyType_GenericAlloc(<PyTypeObject *>RequestHead, 0)
    head.method = method
    head.target = target
    head.path = path
    head.raw_query = raw_query
    head.http_version = version
    head.headers = headers
    return head


def parse_request_head(bytes data, Py_ssize_t max_request_line, Py_ssize_t max_header_line,
                       Py_ssize_t max_headers, Py_ssize_t max_head_size):
    """``(head, end, key)`` for a usual request head at the start of ``data``, else ``None``.

    ``end`` is where the head's final empty line ends (what follows is the client's first
    frames); ``key`` is the ``Sec-WebSocket-Key`` of a valid opening handshake whose
    fields each occur once, else ``None`` (see the module docstring).
    """
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef const char *found
    cdef Py_ssize_t end, pos, line_end, colon, vstart, vend, i, count = 0
    cdef Py_ssize_t sp1 = -1, sp2 = -1, query = -1
    cdef const char *field_at[F_COUNT]
    cdef Py_ssize_t field_len[F_COUNT]
    cdef int field_seen[F_COUNT]
    cdef int field
    cdef bint is_get
    key_text = None
    if size == 0 or buf[0] == b'\r' or buf[0] == b'\n':
        return None
    found = <const char *>memmem(buf, size, b"\r\n\r\n", 4)
    if found == NULL:
        return None
    end = found - buf
    if end + 4 > max_head_size:
        return None

    # The request line: method SP origin-form-target SP HTTP/1.x, nothing else here.
    line_end = 0
    while buf[line_end] != b'\r':
        if CONTROL[<unsigned char>buf[line_end]]:
            return None
        if buf[line_end] == b' ':
            if sp1 < 0:
                sp1 = line_end
            elif sp2 < 0:
                sp2 = line_end
            else:
                return None
        line_end += 1
    if buf[line_end + 1] != b'\n' or line_end > max_request_line or sp2 < 0:
        return None
    if sp1 == 0 or sp2 == sp1 + 1 or not _all_in(TCHAR, buf, sp1):
        return None
    if line_end - sp2 - 1 != 8 or memcmp(buf + sp2 + 1, b"HTTP/1.", 7) != 0:
        return None
    if buf[sp2 + 8] == b'1':
        version = HTTP_11
    elif buf[sp2 + 8] == b'0':
        version = HTTP_10
    else:
        return None
    if buf[sp1 + 1] != b'/':
        return None                      # absolute, authority or asterisk form: the slow path
    for i in range(sp1 + 1, sp2):
        if buf[i] <= b' ' or <unsigned char>buf[i] >= 0x7F or buf[i] == b'#':
            return None
        if buf[i] == b'?' and query < 0:
            query = i
    is_get = sp1 == 3 and memcmp(buf, b"GET", 3) == 0
    method = GET if is_get else PyUnicode_DecodeASCII(buf, sp1, NULL)
    target = PyUnicode_DecodeASCII(buf + sp1 + 1, sp2 - sp1 - 1, NULL)
    if query < 0:
        path, raw_query = target, EMPTY
    else:
        path = PyUnicode_DecodeASCII(buf + sp1 + 1, query - sp1 - 1, NULL)
        raw_query = PyUnicode_DecodeASCII(buf + query + 1, sp2 - query - 1, NULL)

    # The header fields, one line each.
    for field in range(F_COUNT):
        field_seen[field] = 0
    items = []
    pos = line_end + 2
    while pos < end + 2:
        line_end = pos
        colon = -1
        while buf[line_end] != b'\r':
            if CONTROL[<unsigned char>buf[line_end]]:
                return None
            if colon < 0 and buf[line_end] == b':':
                colon = line_end
            line_end += 1
        if buf[line_end + 1] != b'\n':
            return None
        count += 1
        if count > max_headers or line_end - pos > max_header_line:
            return None
        # A name is one token right up to the colon: this also turns away an empty name,
        # whitespace before the colon and a folded line (which starts with whitespace).
        if colon <= pos or not _all_in(TCHAR, buf + pos, colon - pos):
            return None
        vstart, vend = colon + 1, line_end
        while vstart < vend and (buf[vstart] == b' ' or buf[vstart] == b'\t'):
            vstart += 1
        while vend > vstart and (buf[vend - 1] == b' ' or buf[vend - 1] == b'\t'):
            vend -= 1
        field = _field(buf + pos, colon - pos)
        if field != F_COUNT:
            field_seen[field] += 1
            field_at[field] = buf + vstart
            field_len[field] = vend - vstart
        if field == F_KEY:
            # It differs on every request: kept out of the cache, where it would only
            # push out what repeats.
            value = key_text = PyUnicode_DecodeLatin1(buf + vstart, vend - vstart, NULL)
        else:
            value = _latin1(buf + vstart, vend - vstart)
        items.append((_latin1(buf + pos, colon - pos), value))
        pos = line_end + 2

    key = None
    if (is_get and version is HTTP_11
            and field_seen[F_HOST] == 1 and field_seen[F_UPGRADE] == 1
            and field_seen[F_CONNECTION] == 1 and field_seen[F_KEY] == 1
            and field_seen[F_VERSION] == 1
            and field_len[F_HOST] > 0 and _all_in(HOSTCHAR, field_at[F_HOST], field_len[F_HOST])
            and _has_token(field_at[F_UPGRADE], field_len[F_UPGRADE], b"websocket", 9)
            and _has_token(field_at[F_CONNECTION], field_len[F_CONNECTION], b"upgrade", 7)
            and _is_key(field_at[F_KEY], field_len[F_KEY])
            and field_len[F_VERSION] == 2 and memcmp(field_at[F_VERSION], b"13", 2) == 0):
        key = key_text
    return _request_head(method, target, path, raw_query, version, items), end + 4, key


def accept_key_bytes(str key):
    """``Sec-WebSocket-Accept`` for ``key``: base64(SHA-1(key + GUID)), as bytes."""
    cdef char out[29]
    raw = key.encode("latin-1")
    if len(raw) > WS_ACCEPT_MAX_KEY:
        # Never a valid key (those are 24 characters); computed all the same.
        return b2a_base64(hashlib.sha1(raw + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest(),
                          newline=False)
    ws_accept(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), out)
    return PyBytes_FromStringAndSize(out, 28)


cdef bytes PREFIX_101 = (b"HTTP/1.1 101 Switching Protocols\r\n"
                         b"Upgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: ")


def response_101(str key):
    """The usual 101 for ``key``: no subprotocol, no extension."""
    cdef Py_ssize_t n = len(PREFIX_101)
    cdef bytes accept = accept_key_bytes(key)
    response = PyBytes_FromStringAndSize(NULL, n + 28 + 4)
    cdef char *out = PyBytes_AS_STRING(response)
    memcpy(out, PyBytes_AS_STRING(PREFIX_101), n)
    memcpy(out + n, PyBytes_AS_STRING(accept), 28)
    memcpy(out + n + 28, b"\r\n\r\n", 4)
    return response


def pack_header_fields(headers):
    """The fields of ``headers`` (a :class:`~harpia.http_head.Headers`) as one string, names
    and values separated by LF: what an open connection keeps of its request until someone
    reads ``ws.headers`` (``harpia.connection.unpack_header_fields`` makes them a Headers
    again).  One string costs about the bytes received; a Headers costs a tuple and two
    strings per field (``sys.getsizeof``, deep: 2.4 KiB against 0.5 KiB for a Chrome
    handshake of 12 fields).  No name or value holds a LF (the request parser refuses
    control characters), so the packing is unambiguous.  Built with one allocation: this
    runs for every connection."""
    cdef list items = headers._items
    cdef Py_ssize_t size = 0, at = 0, n
    cdef tuple field
    cdef char *out
    for field in items:
        for text in field:
            if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
                # Text beyond latin-1 (a Headers made by hand, not by the parser).
                return "\n".join([part for field in items for part in field])
            size += PyUnicode_GET_LENGTH(text) + 1
    if size == 0:
        return EMPTY
    packed = PyUnicode_New(size - 1, 255)
    out = <char *>PyUnicode_1BYTE_DATA(packed)
    for field in items:
        for text in field:
            n = PyUnicode_GET_LENGTH(text)
            memcpy(out + at, PyUnicode_1BYTE_DATA(text), n)
            at += n
            if at < size - 1:
                out[at] = b'\n'
                at += 1
    return packed
