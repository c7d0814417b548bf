"""Tests for the opening handshake: HTTP request parsing (http_parser, http_head), the
RFC 6455 checks (handshake), the responses (http_response) and Request (request)."""
from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection
from wsproto.events import Request as WSRequest
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from harpia.errors import HandshakeError, Reject
from harpia.handshake import (
    accept_key,
    check_origin,
    check_websocket_request,
    is_websocket_upgrade,
    parse_extension_offers,
    parse_header_tokens,
    select_subprotocol,
)
from harpia.http_head import Headers, RequestHead
from harpia.http_parser import HttpRequestParser
from harpia.http_response import error_response, response_101, response_http
from harpia.request import Request

# RFC 6455 §1.3 example key and its accept value.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

UPGRADE = (
    b"GET /chat?room=1&x= HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


# --- helpers -------------------------------------------------------------------


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (any order, repeats allowed: empty chunks)."""
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def in_halves(data: bytes) -> list[bytes]:
    return split_at(data, [len(data) // 2])


SPLITTERS: list[Callable[[bytes], list[bytes]]] = [whole, bytewise, in_halves]


def feed_chunks(chunks: Sequence[bytes], **limits: int) -> tuple[RequestHead, bytes]:
    """Feed chunks until the head is returned; return it and every byte after it."""
    parser = HttpRequestParser(**limits)
    for i, chunk in enumerate(chunks):
        head = parser.feed(chunk)
        if head is not None:
            return head, parser.trailing + b"".join(chunks[i + 1 :])
    raise AssertionError("the parser never returned a head")


def feed_error(chunks: Sequence[bytes], **limits: int) -> HandshakeError:
    """Feed chunks, expecting a HandshakeError; return it."""
    parser = HttpRequestParser(**limits)
    with pytest.raises(HandshakeError) as info:
        for chunk in chunks:
            assert parser.feed(chunk) is None
    return info.value


def parse(data: bytes, **limits: int) -> RequestHead:
    return feed_chunks([data], **limits)[0]


def head_with(*header_lines: bytes, request_line: bytes = b"GET /chat HTTP/1.1") -> RequestHead:
    return parse(request_line + b"\r\n" + b"".join(line + b"\r\n" for line in header_lines) + b"\r\n")


GOOD_WS_HEADERS = (
    b"Host: example.com",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + RFC_KEY.encode(),
    b"Sec-WebSocket-Version: 13",
)


def ws_head_without(name: bytes, *extra: bytes, request_line: bytes = b"GET /chat HTTP/1.1") -> RequestHead:
    lines = [line for line in GOOD_WS_HEADERS if not line.lower().startswith(name.lower() + b":")]
    return head_with(*lines, *extra, request_line=request_line)


def handshake_error(head: RequestHead) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        check_websocket_request(head)
    return info.value


@st.composite
def cuts_for(draw: st.DrawFn, data: bytes) -> list[int]:
    return draw(st.lists(st.integers(0, len(data)), max_size=12))


# --- Headers ---------------------------------------------------------------------


def test_headers_case_insensitive_first_value() -> None:
    h = Headers([("Host", "a"), ("X-Multi", "1"), ("x-multi", "2"), ("Accept", "*/*")])
    assert h["host"] == "a"
    assert h["HOST"] == "a"
    assert h["X-MULTI"] == "1"
    assert h.get_all("X-Multi") == ["1", "2"]
    assert h.get_all("missing") == []
    assert h.get_all("host") == ["a"]
    assert h.get("missing") is None
    assert h.get("missing", "d") == "d"
    assert h.get("Accept") == "*/*"
    with pytest.raises(KeyError):
        h["missing"]


def test_headers_iteration_len_contains_repr() -> None:
    items = [("Host", "a"), ("X-Multi", "1"), ("x-multi", "2"), ("Accept", "*/*")]
    h = Headers(items)
    assert list(h) == ["host", "x-multi", "accept"]
    assert len(h) == 3
    assert "ACCEPT" in h and "x-MULTI" in h
    assert "nope" not in h
    not_a_name: object = 42
    assert not_a_name not in h
    assert h.raw_items() == items
    assert dict(h) == {"host": "a", "x-multi": "1", "accept": "*/*"}
    assert repr(h) == f"Headers({items!r})"
    assert len(Headers()) == 0 and list(Headers()) == []


def test_headers_equality() -> None:
    h = Headers([("Host", "a"), ("X", "1"), ("X", "2")])
    assert h == Headers([("host", "a"), ("x", "1"), ("x", "2")])
    assert h != Headers([("Host", "a"), ("X", "1")])
    assert h != Headers([("Host", "a"), ("X", "2"), ("X", "1")])
    assert h != Headers([("Host", "A"), ("X", "1"), ("X", "2")])
    assert h == {"host": "a", "x": "1"}  # as a Mapping: names and first values
    assert h != {"host": "a"}


def test_headers_get_all_returns_a_copy() -> None:
    h = Headers([("A", "1"), ("a", "2")])
    h.get_all("a").append("3")
    h.raw_items().append(("B", "x"))
    assert h.get_all("a") == ["1", "2"]
    assert "b" not in h


def test_headers_are_small() -> None:
    h = Headers([("Host", "a")])
    assert not hasattr(h, "__dict__")
    # The lower-case index is built on first use only.
    assert h._index is None
    assert h["host"] == "a"
    assert h._index is not None


def test_compacted_headers_answer_the_same() -> None:
    h = Headers([("Host", "a"), ("X-Multi", "1"), ("x-multi", "2")])
    assert h.get_all("x-multi") == ["1", "2"]
    h.compact()
    assert h._index is None and h._multi is None
    assert (h["HOST"], h.get_all("X-MULTI"), list(h)) == ("a", ["1", "2"], ["host", "x-multi"])


# --- parser: valid requests --------------------------------------------------------


@pytest.mark.parametrize("split", SPLITTERS)
def test_parse_upgrade_request(split: Callable[[bytes], list[bytes]]) -> None:
    head, rest = feed_chunks(split(UPGRADE))
    assert rest == b""
    assert head.method == "GET"
    assert head.target == "/chat?room=1&x="
    assert head.path == "/chat"
    assert head.raw_query == "room=1&x="
    assert head.http_version == "HTTP/1.1"
    assert head.headers["sec-websocket-key"] == RFC_KEY
    assert head.headers.raw_items()[0] == ("Host", "server.example.com")
    assert len(head.headers.raw_items()) == 7


@pytest.mark.parametrize("split", SPLITTERS)
def test_trailing_data_after_head(split: Callable[[bytes], list[bytes]]) -> None:
    frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" * 3
    head, rest = feed_chunks(split(UPGRADE + frame))
    assert head.path == "/chat"
    assert rest == frame


def test_trailing_attribute_in_single_feed() -> None:
    parser = HttpRequestParser()
    assert parser.trailing == b""
    assert parser.feed(UPGRADE + b"abc") is not None
    assert parser.trailing == b"abc"


@given(st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_random_splits_give_same_head(data: st.DataObject) -> None:
    tail = data.draw(st.binary(max_size=40))
    payload = UPGRADE + tail
    cuts = data.draw(cuts_for(payload))
    head, rest = feed_chunks(split_at(payload, cuts))
    assert head == parse(UPGRADE)
    assert rest == tail


def test_empty_feed_returns_none() -> None:
    parser = HttpRequestParser()
    assert parser.feed(b"") is None
    assert parser.feed(UPGRADE[:10]) is None
    assert parser.feed(b"") is None
    assert parser.feed(UPGRADE[10:]) is not None


def test_feed_after_head_is_an_error() -> None:
    parser = HttpRequestParser()
    assert parser.feed(UPGRADE) is not None
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_feed_after_error_raises_again() -> None:
    parser = HttpRequestParser()
    with pytest.raises(HandshakeError) as first:
        parser.feed(b"GET / HTTP/9.9\r\n")
    with pytest.raises(HandshakeError) as second:
        parser.feed(b"Host: x\r\n\r\n")
    assert second.value is first.value


@pytest.mark.parametrize("split", SPLITTERS)
def test_bare_lf_line_endings_are_accepted(split: Callable[[bytes], list[bytes]]) -> None:
    lf = UPGRADE.replace(b"\r\n", b"\n")
    head, rest = feed_chunks(split(lf + b"XY"))
    assert head == parse(UPGRADE)
    assert rest == b"XY"


@pytest.mark.parametrize("split", SPLITTERS)
def test_mixed_line_endings(split: Callable[[bytes], list[bytes]]) -> None:
    data = b"GET / HTTP/1.1\nHost: a\r\nX: 1\n\r\nrest"
    head, rest = feed_chunks(split(data))
    assert head.headers.raw_items() == [("Host", "a"), ("X", "1")]
    assert rest == b"rest"
    # A bare LF ends the head before a later CRLF CRLF.
    head, rest = feed_chunks(split(b"GET / HTTP/1.1\nHost: a\n\nX: 1\r\n\r\n"))
    assert head.headers.raw_items() == [("Host", "a")]
    assert rest == b"X: 1\r\n\r\n"


@pytest.mark.parametrize("split", SPLITTERS)
def test_leading_empty_lines_are_ignored(split: Callable[[bytes], list[bytes]]) -> None:
    head, rest = feed_chunks(split(b"\r\n\n\r\n" + UPGRADE))
    assert head == parse(UPGRADE)
    assert rest == b""


def test_header_values_are_stripped_and_latin1() -> None:
    head = head_with(b"A: \t spaced  out \t ", b"B:", b"C:   ", b"D: caf\xe9", b"E:x")
    assert head.headers.raw_items() == [("A", "spaced  out"), ("B", ""), ("C", ""), ("D", "caf\xe9"), ("E", "x")]


def test_request_without_headers() -> None:
    head = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert head.http_version == "HTTP/1.0"
    assert len(head.headers) == 0


def test_uncommon_method_and_header_names() -> None:
    head = head_with(b"X-Custom_Thing.v2~!: 1", request_line=b"M-SEARCH /x HTTP/1.1")
    assert head.method == "M-SEARCH"
    assert head.headers["x-custom_thing.v2~!"] == "1"


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", ""),
        ("/a/b?c=d&e", "/a/b", "c=d&e"),
        ("/?", "/", ""),
        ("/%20x?q=%41", "/%20x", "q=%41"),
        ("http://example.com/chat?x=1", "/chat", "x=1"),
        ("HTTPS://example.com:8443/a", "/a", ""),
        ("ws://example.com", "/", ""),
        ("wss://example.com?x", "/", "x"),
    ],
)
def test_request_targets(target: str, path: str, query: str) -> None:
    head = parse(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert head.target == target
    assert head.path == path
    assert head.raw_query == query


# --- parser: malformed requests ------------------------------------------------------

BAD_REQUESTS = [
    # request line
    (b"GET /\r\n\r\n", 400),  # no version
    (b"GET\r\n\r\n", 400),
    (b"GET / HTTP/1.1 x\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\n\r\n", 400),
    (b"GET /\tx HTTP/1.1\r\n\r\n", 400),
    (b" / HTTP/1.1\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\n\r\n", 400),
    (b"G\xc9T / HTTP/1.1\r\n\r\n", 400),
    (b"GET / http/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1\r\n\r\n", 400),
    (b"GET / HTTP/1.1.1\r\n\r\n", 400),
    (b"GET / HTTP/11\r\n\r\n", 400),
    (b"GET / HTTP/a.b\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/3.0\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\n\r\n", 505),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", 400),
    (b"GET chat HTTP/1.1\r\n\r\n", 400),
    (b"GET ftp://example.com/ HTTP/1.1\r\n\r\n", 400),
    (b"GET http:///chat HTTP/1.1\r\n\r\n", 400),
    (b"GET /chat#frag HTTP/1.1\r\n\r\n", 400),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
    (b"GET /a\x7f HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\rX\r\n\r\n", 400),  # bare CR
    # header lines
    (b"GET / HTTP/1.1\r\nHost example.com\r\n\r\n", 400),  # no colon
    (b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400),  # space before colon
    (b"GET / HTTP/1.1\r\nHost\t: example.com\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n: empty\r\n\r\n", 400),  # empty name
    (b"GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", 400),  # non-token name
    (b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nH\xe9st: x\r\n\r\n", 400),  # non-ASCII name
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),  # obs-fold
    (b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n X: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),  # control characters in values
    (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),  # bare CR in a value
    (b"GET / HTTP/1.1\r\nHost\r\n\r\n", 400),  # a known name without a colon
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: \r\r\n\r\n", 400),
]


@pytest.mark.parametrize(("data", "status"), BAD_REQUESTS)
@pytest.mark.parametrize("split", SPLITTERS)
def test_malformed_requests(data: bytes, status: int, split: Callable[[bytes], list[bytes]]) -> None:
    error = feed_error(split(data))
    assert error.status == status
    assert error.message


@pytest.mark.parametrize(("data", "status"), BAD_REQUESTS)
@given(st.data())
@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
def test_malformed_requests_random_splits(data: bytes, status: int, st_data: st.DataObject) -> None:
    cuts = st_data.draw(cuts_for(data))
    assert feed_error(split_at(data, cuts)).status == status


def test_error_messages_say_what_is_wrong() -> None:
    assert "colon" in feed_error([b"GET / HTTP/1.1\r\nHost x\r\n\r\n"]).message
    assert "whitespace" in feed_error([b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"]).message
    assert "folding" in feed_error([b"GET / HTTP/1.1\r\nA: x\r\n b\r\n\r\n"]).message
    assert "empty header name" in feed_error([b"GET / HTTP/1.1\r\n: x\r\n\r\n"]).message
    assert "version" in feed_error([b"GET / HTTP/2.0\r\n\r\n"]).message
    assert "missing HTTP version" in feed_error([b"GET /\r\n\r\n"]).message


# --- parser: limits ----------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITTERS)
def test_request_line_limit(split: Callable[[bytes], list[bytes]]) -> None:
    line = b"GET /" + b"a" * 45 + b" HTTP/1.1"  # 59 bytes
    ok = line + b"\r\nHost: x\r\n\r\n"
    assert feed_chunks(split(ok), max_request_line=len(line))[0].path == "/" + "a" * 45
    assert feed_chunks(split(ok.replace(b"\r\n", b"\n")), max_request_line=len(line))[0].method == "GET"
    assert feed_error(split(ok), max_request_line=len(line) - 1).status == 414


def test_request_line_limit_is_enforced_before_the_line_ends() -> None:
    parser = HttpRequestParser(max_request_line=100)
    assert parser.feed(b"GET /" + b"a" * 95) is None  # 100 bytes: at the limit
    assert parser.feed(b"\r") is None  # could still be a CRLF
    with pytest.raises(HandshakeError) as info:
        parser.feed(b"x")
    assert info.value.status == 414
    # One huge chunk without a newline is refused at once, not buffered.
    with pytest.raises(HandshakeError) as info:
        HttpRequestParser(max_request_line=100).feed(b"GET /" + b"a" * 1_000_000)
    assert info.value.status == 414


def test_request_line_limit_byte_by_byte_fails_at_the_first_byte_over() -> None:
    parser = HttpRequestParser(max_request_line=20)
    for byte in bytewise(b"A" * 20):
        assert parser.feed(byte) is None
    with pytest.raises(HandshakeError) as info:
        parser.feed(b"A")
    assert info.value.status == 414


@pytest.mark.parametrize("split", SPLITTERS)
def test_header_line_limit(split: Callable[[bytes], list[bytes]]) -> None:
    line = b"X-Long: " + b"v" * 92  # 100 bytes
    data = b"GET / HTTP/1.1\r\n" + line + b"\r\nHost: x\r\n\r\n"
    assert feed_chunks(split(data), max_header_line=100)[0].headers["x-long"] == "v" * 92
    error = feed_error(split(data), max_header_line=99)
    assert error.status == 431
    assert "header line" in error.message


def test_header_line_limit_is_enforced_before_the_line_ends() -> None:
    parser = HttpRequestParser(max_header_line=50)
    assert parser.feed(b"GET / HTTP/1.1\r\nX: " + b"v" * 47) is None  # 50 bytes so far
    with pytest.raises(HandshakeError) as info:
        parser.feed(b"v")
    assert info.value.status == 431
    with pytest.raises(HandshakeError) as info:
        HttpRequestParser(max_header_line=50).feed(b"GET / HTTP/1.1\r\nX: " + b"v" * 1_000_000)
    assert info.value.status == 431


@pytest.mark.parametrize("split", SPLITTERS)
def test_max_headers(split: Callable[[bytes], list[bytes]]) -> None:
    def request(n: int) -> bytes:
        return b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(n)) + b"\r\n"

    assert len(feed_chunks(split(request(5)), max_headers=5)[0].headers) == 5
    error = feed_error(split(request(6)), max_headers=5)
    assert error.status == 431
    assert "too many" in error.message
    # Raised as the extra header arrives, without waiting for the end of the head.
    assert feed_error([request(6)[:-2]], max_headers=5).status == 431


@pytest.mark.parametrize("split", SPLITTERS)
def test_max_head_size(split: Callable[[bytes], list[bytes]]) -> None:
    size = len(UPGRADE)
    assert feed_chunks(split(UPGRADE + b"trailing data"), max_head_size=size)[0] == parse(UPGRADE)
    error = feed_error(split(UPGRADE), max_head_size=size - 1)
    assert error.status == 431
    assert "too large" in error.message
    lf = UPGRADE.replace(b"\r\n", b"\n")
    assert feed_chunks(split(lf), max_head_size=len(lf))[0] == parse(UPGRADE)
    assert feed_error(split(lf), max_head_size=len(lf) - 1).status == 431


def test_max_head_size_counts_leading_empty_lines() -> None:
    data = b"\r\n" * 10 + UPGRADE
    assert parse(data, max_head_size=len(data)) == parse(UPGRADE)
    assert feed_error([data], max_head_size=len(data) - 1).status == 431
    assert feed_error([b"\r\n", UPGRADE], max_head_size=len(UPGRADE) + 1).status == 431
    assert feed_chunks([b"\r\n", UPGRADE], max_head_size=len(UPGRADE) + 2)[0] == parse(UPGRADE)
    assert feed_error([b"\r\n" * 1000], max_head_size=100).status == 431


def test_max_head_size_is_enforced_before_buffering() -> None:
    # Many short lines: no line limit is hit, the head size is.
    parser = HttpRequestParser(max_head_size=1000, max_headers=10_000)
    with pytest.raises(HandshakeError) as info:
        parser.feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 1_000_000)
    assert info.value.status == 431
    # Never more than max_head_size bytes are buffered for an unfinished head.
    parser = HttpRequestParser(max_head_size=100)
    assert parser.feed(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 80) is None  # 99 bytes
    with pytest.raises(HandshakeError) as info:
        parser.feed(b"y")  # 100 bytes and no end: the head will be over 100
    assert info.value.status == 431


def test_large_trailing_data_is_not_limited() -> None:
    head, rest = feed_chunks([UPGRADE + b"x" * 200_000], max_head_size=len(UPGRADE))
    assert len(rest) == 200_000


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """UPGRADE with a few bytes replaced, inserted or deleted: valid or not, in any way."""
    prefix = draw(st.sampled_from([b"", b"\r\n", b"\n\r\n"]))
    data = bytearray(prefix + UPGRADE + draw(st.binary(max_size=8)))
    interesting = st.sampled_from(list(b"\r\n\x00\t :\"/?#,;=aZ\x7f\xe9H"))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "replace":
            data[i] = draw(interesting)
        elif action == "insert":
            data.insert(i, draw(interesting))
        elif len(data) > 1:
            del data[i]
    return bytes(data)


def outcome(chunks: Sequence[bytes], **limits: int) -> tuple[object, ...]:
    parser = HttpRequestParser(**limits)
    try:
        for i, chunk in enumerate(chunks):
            head = parser.feed(chunk)
            if head is not None:
                return ("head", head, parser.trailing + b"".join(chunks[i + 1 :]))
    except HandshakeError as exc:
        return ("error", exc.status, exc.message)
    return ("incomplete",)


@given(
    mutated_requests(),
    st.data(),
    st.fixed_dictionaries(
        {},
        optional={
            "max_request_line": st.integers(10, 60),
            "max_header_line": st.integers(10, 60),
            "max_headers": st.integers(0, 10),
            "max_head_size": st.integers(50, 300),
        },
    ),
)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_same_outcome_however_the_bytes_arrive(raw: bytes, data: st.DataObject, limits: dict[str, int]) -> None:
    # The whole-head fast path and the line-by-line path must agree on
    # everything: the head, the trailing bytes, or the exact error.
    expected = outcome(bytewise(raw), **limits)
    assert outcome([raw], **limits) == expected
    assert outcome(split_at(raw, data.draw(cuts_for(raw))), **limits) == expected


# --- parser vs h11 -----------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PATH_CHARS = "abcXYZ019-._~!$&'()*+,;=:@%/"
VALUE_CHARS = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0x80, 0x100)]

tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
header_names = tokens.filter(lambda n: n.lower() not in ("host", "content-length", "transfer-encoding"))
header_values = st.lists(
    st.text(alphabet=VALUE_CHARS, min_size=1, max_size=10), max_size=4
).map(" ".join)
ows = st.text(alphabet=" \t", max_size=3)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, str, str, list[tuple[str, str]]]:
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "HEAD", "DELETE"]), tokens))
    target = "/" + draw(st.text(alphabet=PATH_CHARS, max_size=20))
    if draw(st.booleans()):
        target += "?" + draw(st.text(alphabet=PATH_CHARS + "?", max_size=20))
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=12))
    headers.insert(draw(st.integers(0, len(headers))), ("Host", draw(st.sampled_from(["example.com", "a:80"]))))
    parts = [f"{method} {target} HTTP/1.1".encode()]
    for name, value in headers:
        parts.append(f"{name}:{draw(ows)}{value}{draw(ows)}".encode("latin-1"))
    parts.append(b"")  # the empty line ending the head
    endings = [draw(st.sampled_from([b"\r\n", b"\n"])) for _ in parts]
    data = b"".join(part + end for part, end in zip(parts, endings))
    return data, method, target, headers


@given(valid_requests(), st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_agrees_with_h11(request: tuple[bytes, str, str, list[tuple[str, str]]], data: st.DataObject) -> None:
    raw, method, target, headers = request
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)

    cuts = data.draw(cuts_for(raw))
    head, rest = feed_chunks(split_at(raw, cuts))
    assert rest == b""
    assert head.method.encode() == event.method
    assert head.target.encode() == event.target
    ours = [(name.lower().encode(), value.encode("latin-1")) for name, value in head.headers.raw_items()]
    assert ours == list(event.headers)
    # And both match what was generated.
    assert (head.method, head.target) == (method, target)
    assert head.headers.raw_items() == headers


# --- WebSocket checks --------------------------------------------------------------------


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_valid_request_returns_the_key() -> None:
    assert check_websocket_request(parse(UPGRADE)) == RFC_KEY
    assert check_websocket_request(head_with(*GOOD_WS_HEADERS)) == RFC_KEY


@pytest.mark.parametrize("method", [b"POST", b"HEAD", b"PUT", b"get"])
def test_method_must_be_get(method: bytes) -> None:
    error = handshake_error(ws_head_without(b"-", request_line=method + b" /chat HTTP/1.1"))
    assert error.status == 405
    assert error.headers == {"Allow": "GET"}
    assert "GET" in error.message


def test_http_version_must_be_1_1() -> None:
    error = handshake_error(ws_head_without(b"-", request_line=b"GET /chat HTTP/1.0"))
    assert error.status == 400
    assert "HTTP/1.1" in error.message


@pytest.mark.parametrize(
    ("host_lines", "message"),
    [
        ((), "missing Host"),
        ((b"Host: a.com", b"Host: b.com"), "more than one Host"),
        ((b"Host:",), "invalid Host"),
        ((b"Host: a.com/evil",), "invalid Host"),
        ((b"Host: a.com b.com",), "invalid Host"),
        ((b"Host: user@a.com",), "invalid Host"),
    ],
)
def test_host_is_required(host_lines: tuple[bytes, ...], message: str) -> None:
    error = handshake_error(ws_head_without(b"Host", *host_lines))
    assert error.status == 400
    assert message in error.message


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"127.0.0.1:1", b"[::1]:8000", b"xn--bcher-kva.example"])
def test_valid_hosts(host: bytes) -> None:
    assert check_websocket_request(ws_head_without(b"Host", b"Host: " + host)) == RFC_KEY


@pytest.mark.parametrize(
    ("upgrade_lines", "message"),
    [
        ((), "missing Upgrade"),
        ((b"Upgrade: h2c",), "Upgrade header does not include websocket"),
        ((b"Upgrade: websockets",), "Upgrade header does not include websocket"),
        ((b"Upgrade:",), "Upgrade header does not include websocket"),
    ],
)
def test_upgrade_must_name_websocket(upgrade_lines: tuple[bytes, ...], message: str) -> None:
    error = handshake_error(ws_head_without(b"Upgrade", *upgrade_lines))
    assert error.status == 400
    assert message in error.message


@pytest.mark.parametrize(
    "upgrade_lines",
    [
        (b"Upgrade: WebSocket",),
        (b"Upgrade: h2c, websocket",),
        (b"Upgrade: foo/2 ,\tWEBSOCKET , ",),
        (b"Upgrade: h2c", b"Upgrade: websocket"),
    ],
)
def test_upgrade_token_lists(upgrade_lines: tuple[bytes, ...]) -> None:
    head = ws_head_without(b"Upgrade", *upgrade_lines)
    assert check_websocket_request(head) == RFC_KEY
    assert is_websocket_upgrade(head)


@pytest.mark.parametrize(
    ("connection_lines", "message"),
    [
        ((), "missing Connection"),
        ((b"Connection: keep-alive",), "Connection header does not include upgrade"),
        ((b"Connection: close, upgraded",), "Connection header does not include upgrade"),
    ],
)
def test_connection_must_name_upgrade(connection_lines: tuple[bytes, ...], message: str) -> None:
    error = handshake_error(ws_head_without(b"Connection", *connection_lines))
    assert error.status == 400
    assert message in error.message


@pytest.mark.parametrize(
    "connection_lines",
    [
        (b"Connection: upgrade",),
        (b"Connection: keep-alive, Upgrade",),  # what Firefox sends
        (b"Connection: keep-alive", b"Connection: UPGRADE"),
    ],
)
def test_connection_token_lists(connection_lines: tuple[bytes, ...]) -> None:
    assert check_websocket_request(ws_head_without(b"Connection", *connection_lines)) == RFC_KEY


@pytest.mark.parametrize(
    ("key_lines", "message"),
    [
        ((), "missing Sec-WebSocket-Key header"),
        ((b"Sec-WebSocket-Key: " + RFC_KEY.encode(),) * 2, "more than one Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: not base64 at all!!!!!",), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: " + base64.b64encode(b"x" * 15),), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: " + base64.b64encode(b"x" * 17),), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: " + base64.b64encode(b"x" * 18),), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=",), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===",), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\xe9Q==",), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ==",), "invalid Sec-WebSocket-Key"),
        ((b"Sec-WebSocket-Key:",), "invalid Sec-WebSocket-Key"),
    ],
)
def test_key_must_be_16_base64_bytes(key_lines: tuple[bytes, ...], message: str) -> None:
    error = handshake_error(ws_head_without(b"Sec-WebSocket-Key", *key_lines))
    assert error.status == 400
    assert message in error.message


@pytest.mark.parametrize(
    "version_lines",
    [(), (b"Sec-WebSocket-Version: 8",), (b"Sec-WebSocket-Version: 13, 8",), (b"Sec-WebSocket-Version: 13",) * 2],
)
def test_version_must_be_13(version_lines: tuple[bytes, ...]) -> None:
    error = handshake_error(ws_head_without(b"Sec-WebSocket-Version", *version_lines))
    assert error.status == 426
    assert error.headers["Sec-WebSocket-Version"] == "13"
    assert "Sec-WebSocket-Version" in error.message


def test_checks_run_in_spec_order() -> None:
    # A POST with nothing else right still gets 405, not 400.
    assert handshake_error(head_with(request_line=b"POST / HTTP/1.1")).status == 405
    assert handshake_error(head_with(b"Host: x")).status == 400


def test_is_websocket_upgrade() -> None:
    assert is_websocket_upgrade(parse(UPGRADE))
    assert not is_websocket_upgrade(head_with(b"Host: x"))
    assert not is_websocket_upgrade(head_with(b"Upgrade: h2c"))
    assert is_websocket_upgrade(head_with(b"upgrade: h2c", b"UPGRADE: WebSocket"))


def test_parse_header_tokens() -> None:
    assert parse_header_tokens([]) == []
    assert parse_header_tokens(["a"]) == ["a"]
    assert parse_header_tokens(["a, B", " c ,, \t", "", ",", "  d  "]) == ["a", "B", "c", "d"]


def test_select_subprotocol() -> None:
    head = head_with(b"Sec-WebSocket-Protocol: chat, superchat", b"Sec-WebSocket-Protocol: v3")
    assert select_subprotocol(head, ["superchat", "chat"]) == "superchat"  # server preference
    assert select_subprotocol(head, ["chat", "superchat"]) == "chat"
    assert select_subprotocol(head, ["nope", "v3"]) == "v3"  # across header lines
    assert select_subprotocol(head, ["CHAT"]) is None  # case-sensitive
    assert select_subprotocol(head, ["other"]) is None
    assert select_subprotocol(head, []) is None
    assert select_subprotocol(head, None) is None
    assert select_subprotocol(head_with(b"Host: x"), ["chat"]) is None


def test_check_origin() -> None:
    head = head_with(b"Origin: https://Example.COM")
    check_origin(head, None)
    check_origin(head_with(b"Host: x"), None)  # None allows no Origin too
    check_origin(head, ["https://example.com"])
    check_origin(head, {"HTTPS://EXAMPLE.COM", "http://other"})
    with pytest.raises(HandshakeError) as info:
        check_origin(head, ["http://example.com", "https://example.com:8443"])
    assert info.value.status == 403
    assert info.value.message == "origin not allowed: https://Example.COM"
    with pytest.raises(HandshakeError) as info:
        check_origin(head_with(b"Host: x"), ["https://example.com"])
    assert info.value.status == 403
    assert "missing Origin" in info.value.message
    with pytest.raises(HandshakeError) as info:
        check_origin(head_with(b"Origin: https://a", b"Origin: https://a"), ["https://a"])
    assert info.value.status == 403
    check_origin(head_with(b"Origin: null"), ["null"])
    with pytest.raises(HandshakeError):
        check_origin(head_with(b"Origin: https://example.com"), [])


# --- extension offers --------------------------------------------------------------------


def extensions_of(*values: bytes) -> list[tuple[str, list[tuple[str, str | None]]]]:
    return parse_extension_offers(head_with(*(b"Sec-WebSocket-Extensions: " + v for v in values)))


def test_extension_offers() -> None:
    assert parse_extension_offers(head_with(b"Host: x")) == []
    assert extensions_of(b"permessage-deflate; client_max_window_bits") == [
        ("permessage-deflate", [("client_max_window_bits", None)])
    ]
    assert extensions_of(
        b"permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate",
        b"x-webkit-deflate-frame",
        b'foo ; a = 1 ;b="2";c="x\\y"',
    ) == [
        ("permessage-deflate", [("client_max_window_bits", None), ("server_max_window_bits", "10")]),
        ("permessage-deflate", []),
        ("x-webkit-deflate-frame", []),
        ("foo", [("a", "1"), ("b", "2"), ("c", "xy")]),
    ]
    # Empty list items are ignored.
    assert extensions_of(b", a ,,", b"") == [("a", [])]


@pytest.mark.parametrize(
    "value",
    [
        b"; a",
        b"a;",
        b"a; ;b",
        b"a; =1",
        b"a; b=",
        b"a; b=1=2",
        b"a b",
        b"a; b c",
        b"a=1",
        b"a; b=\"unterminated",
        b"a; b=\"x y\"",
        b"a; b=\"x,y\"",
        b"a; b=\"x;y\"",
        b"a; b=\"\"",
        b"a; b=\"x\\\"",
        b"a; b=\"",
        b"a; b=x\"",
        b"a; b=\"1\"2\"",
        b"a; b=(1)",
        b"\"a\"",
    ],
)
def test_malformed_extension_offers(value: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        extensions_of(value)
    assert info.value.status == 400
    assert "Sec-WebSocket-Extensions" in info.value.message


# --- responses ---------------------------------------------------------------------------


def test_response_101_rfc_example() -> None:
    assert response_101(RFC_KEY) == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_response_101_with_options() -> None:
    data = response_101(
        RFC_KEY,
        subprotocol="chat",
        extensions="permessage-deflate; server_no_context_takeover",
        extra_headers=[("Set-Cookie", "a=b")],
    )
    assert data == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
        b"Set-Cookie: a=b\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=y", "a\nb", "a\rb", "a\x00b"])
def test_response_101_refuses_cr_lf(bad: str) -> None:
    with pytest.raises(ValueError):
        response_101(RFC_KEY, extra_headers=[("X-Test", bad)])
    with pytest.raises(ValueError):
        response_101(RFC_KEY, extensions=bad)
    with pytest.raises(ValueError):
        response_101(RFC_KEY, subprotocol=bad)
    with pytest.raises(ValueError):
        response_101(RFC_KEY, extra_headers=[(bad, "x")])


@pytest.mark.parametrize("name", ["", "X Y", "X:Y", "X-Évil"])
def test_response_101_refuses_bad_header_names(name: str) -> None:
    with pytest.raises(ValueError):
        response_101(RFC_KEY, extra_headers=[(name, "x")])


def test_response_101_refuses_bad_subprotocol_and_non_latin1() -> None:
    with pytest.raises(ValueError):
        response_101(RFC_KEY, subprotocol="two words")
    with pytest.raises(ValueError):
        response_101(RFC_KEY, subprotocol="")
    with pytest.raises(ValueError):
        response_101(RFC_KEY, extra_headers=[("X", "snow ☃")])
    assert response_101(RFC_KEY, extra_headers=[("X", "caf\xe9")]).endswith(b"X: caf\xe9\r\n\r\n")


def h11_parse_response(data: bytes, method: str = "GET") -> tuple[h11.Response, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            assert isinstance(event, h11.EndOfMessage)
            return response, body


def test_response_http_basic() -> None:
    data = response_http(404, "not here\n")
    assert data == (
        b"HTTP/1.1 404 Not Found\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 9\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"not here\n"
    )
    response, body = h11_parse_response(data)
    assert response.status_code == 404
    assert response.reason == b"Not Found"
    assert body == b"not here\n"


def test_response_http_without_body_has_no_content_type() -> None:
    data = response_http(200)
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    response, body = h11_parse_response(data)
    assert response.status_code == 200 and body == b""


def test_response_http_options() -> None:
    data = response_http(
        200,
        "héllo",
        headers={"X-A": "1", "Content-Length": "999", "Connection": "keep-alive", "Transfer-Encoding": "chunked"},
        content_type="text/html; charset=utf-8",
        keep_alive=True,
    )
    response, body = h11_parse_response(data)
    assert body == "héllo".encode()
    headers = dict(response.headers)
    assert headers[b"content-length"] == b"6"
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"x-a"] == b"1"
    assert b"connection" not in headers
    assert b"transfer-encoding" not in headers
    # The caller's Content-Type wins.
    data = response_http(200, b"{}", headers=[("Content-Type", "application/json")])
    assert data.count(b"Content-Type") == 1 and b"Content-Type: application/json\r\n" in data


def test_response_http_head_only() -> None:
    data = response_http(200, b"0123456789", head_only=True)
    assert data.endswith(b"\r\n\r\n")
    assert b"Content-Length: 10\r\n" in data
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in data
    response, body = h11_parse_response(data, method="HEAD")
    assert response.status_code == 200 and body == b""


def test_response_http_bodiless_statuses() -> None:
    assert response_http(204) == b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    assert b"Content-Length" not in response_http(304)
    with pytest.raises(ValueError):
        response_http(204, b"x")
    with pytest.raises(ValueError):
        response_http(42)
    assert response_http(599).startswith(b"HTTP/1.1 599 \r\n")  # no standard phrase


def test_response_http_upgrade_header_adds_connection_upgrade() -> None:
    data = response_http(426, "upgrade required", headers={"Upgrade": "websocket"})
    assert b"Upgrade: websocket\r\n" in data
    assert b"Connection: Upgrade, close\r\n" in data
    data = response_http(426, headers={"Upgrade": "websocket"}, keep_alive=True)
    assert b"Connection: Upgrade\r\n" in data


@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=y", "a\nb", "a\rb", "a\x00b"])
def test_response_http_refuses_cr_lf(bad: str) -> None:
    with pytest.raises(ValueError):
        response_http(400, headers={"X-Test": bad})
    with pytest.raises(ValueError):
        response_http(400, headers=[(bad, "x")])
    with pytest.raises(ValueError):
        response_http(400, "body", content_type=bad)


def test_error_response() -> None:
    error = handshake_error(ws_head_without(b"-", request_line=b"POST /chat HTTP/1.1"))
    data = error_response(error)
    response, body = h11_parse_response(data)
    assert response.status_code == 405
    assert (b"allow", b"GET") in list(response.headers)
    assert body == (error.message + "\n").encode()

    error = handshake_error(ws_head_without(b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: 7"))
    response, body = h11_parse_response(error_response(error))
    assert response.status_code == 426
    assert (b"sec-websocket-version", b"13") in list(response.headers)
    assert b"Sec-WebSocket-Version" in body

    data = error_response(HandshakeError(400, "missing Sec-WebSocket-Key header"))
    assert data.endswith(b"\r\n\r\nmissing Sec-WebSocket-Key header\n")
    assert error_response(HandshakeError(431)).endswith(b"\r\n\r\nRequest Header Fields Too Large\n")
    # A Reject's body is sent as given.
    data = error_response(Reject(401, b'{"error":"token"}', {"WWW-Authenticate": "Bearer"}))
    response, body = h11_parse_response(data)
    assert response.status_code == 401
    assert body == b'{"error":"token"}'
    assert (b"www-authenticate", b"Bearer") in list(response.headers)


# --- interoperability with wsproto ----------------------------------------------------------


def wsproto_request(**kwargs: object) -> tuple[WSConnection, bytes]:
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(WSRequest(host="example.com", target="/chat?room=1", **kwargs))  # type: ignore[arg-type]
    return client, data


@pytest.mark.parametrize("split", SPLITTERS)
def test_wsproto_client_handshake(split: Callable[[bytes], list[bytes]]) -> None:
    client, data = wsproto_request(
        subprotocols=["chat", "superchat"],
        extensions=[PerMessageDeflate()],
        extra_headers=[(b"Origin", b"https://example.com")],
    )
    head, rest = feed_chunks(split(data))
    assert rest == b""
    assert head.path == "/chat" and head.raw_query == "room=1"
    key = check_websocket_request(head)
    check_origin(head, ["https://example.com"])
    subprotocol = select_subprotocol(head, ["superchat", "chat"])
    assert subprotocol == "superchat"
    offers = parse_extension_offers(head)
    assert [name for name, _ in offers] == ["permessage-deflate"]
    assert "client_max_window_bits" in dict(offers[0][1])

    client.receive_data(response_101(key, subprotocol=subprotocol))
    events = list(client.events())
    assert len(events) == 1
    assert isinstance(events[0], AcceptConnection)
    assert events[0].subprotocol == "superchat"
    assert events[0].extensions == []


def test_wsproto_client_accepts_negotiated_extension() -> None:
    client, data = wsproto_request(extensions=[PerMessageDeflate()])
    key = check_websocket_request(parse(data))
    client.receive_data(response_101(key, extensions="permessage-deflate"))
    (event,) = client.events()
    assert isinstance(event, AcceptConnection)
    assert event.subprotocol is None
    assert [ext.name for ext in event.extensions] == ["permessage-deflate"]


def test_wsproto_client_rejects_a_wrong_accept() -> None:
    # Sanity check of the test above: wsproto does verify Sec-WebSocket-Accept.
    client, data = wsproto_request()
    check_websocket_request(parse(data))
    with pytest.raises(RemoteProtocolError, match="accept"):
        client.receive_data(response_101(RFC_KEY))


def test_wsproto_client_sees_error_response() -> None:
    client, data = wsproto_request()
    client.receive_data(error_response(HandshakeError(403, "origin not allowed: x")))
    event = next(iter(client.events()))
    assert isinstance(event, RejectConnection)
    assert event.status_code == 403


@given(st.lists(st.text(alphabet=TCHARS, min_size=1, max_size=8), min_size=1, max_size=5, unique=True), st.data())
@settings(max_examples=50)
def test_wsproto_subprotocol_negotiation(offered: list[str], data: st.DataObject) -> None:
    supported = data.draw(st.lists(st.sampled_from([*offered, "zz-other"]), unique=True))
    client, request = wsproto_request(subprotocols=offered)
    head = parse(request)
    key = check_websocket_request(head)
    chosen = select_subprotocol(head, supported)
    expected = next((s for s in supported if s in offered), None)
    assert chosen == expected
    client.receive_data(response_101(key, subprotocol=chosen))
    (event,) = client.events()
    assert isinstance(event, AcceptConnection)
    assert event.subprotocol == expected


# --- Request -----------------------------------------------------------------------------------


def test_request_attributes() -> None:
    head = parse(UPGRADE)
    request = Request(head, params={"room": "1"}, remote_address=("10.0.0.1", 5000), secure=False)
    assert request.method == "GET"
    assert request.path == "/chat"
    assert request.raw_query == "room=1&x="
    assert request.headers is head.headers
    assert request.params == {"room": "1"}
    assert request.remote_address == ("10.0.0.1", 5000)
    assert request.url == "ws://server.example.com/chat?room=1&x="
    assert request.url is request.url  # cached
    assert request.query == {"room": "1", "x": ""}
    assert request.query is request.query
    assert not hasattr(request, "__dict__")
    assert "GET /chat?room=1&x=" in repr(request)


def test_request_url_and_query() -> None:
    head = head_with(b"Host: example.com:8443", request_line=b"GET /a%20b?q=1&q=2&s=%E2%98%83&flag HTTP/1.1")
    request = Request(head, params={}, remote_address=None, secure=True)
    assert request.url == "wss://example.com:8443/a%20b?q=1&q=2&s=%E2%98%83&flag"
    assert request.query == {"q": "1", "s": "☃", "flag": ""}  # first value wins
    assert request.remote_address is None
    plain = Request(head_with(b"Host: h"), params={}, remote_address=None, secure=False)
    assert plain.url == "ws://h/chat"
    assert plain.query == {}


# --- the fast acceptance of a usual request and the full checks agree ------------------

# Each header as a client might send it, valid or not: the fast path may accept only what
# the full checks accept, and must return the same key.
_FIELD_VARIANTS = {
    b"Host": [b"example.com", b"", b"a b", b"127.0.0.1:9001", None],
    b"Upgrade": [b"websocket", b"WebSocket", b"h2c, websocket", b"h2c", b"", None],
    b"Connection": [b"Upgrade", b"keep-alive, upgrade", b"keep-alive", b"", None],
    b"Sec-WebSocket-Key": [RFC_KEY.encode(), b"dGhlIHNhbXBsZSBub25jZQ", b"dGhlIHNhbXBsZSBub25jZQ=!",
                           b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA", None],
    b"Sec-WebSocket-Version": [b"13", b"8", b"13, 8", b"", None],
}


@settings(max_examples=300, deadline=None)
@given(choice=st.fixed_dictionaries({name: st.sampled_from(values)
                                     for name, values in _FIELD_VARIANTS.items()}),
       repeat=st.sampled_from([None, *_FIELD_VARIANTS]),
       request_line=st.sampled_from([b"GET /chat HTTP/1.1", b"POST /chat HTTP/1.1",
                                     b"GET /chat HTTP/1.0"]))
def test_fast_acceptance_agrees_with_the_full_checks(
        choice: dict[bytes, bytes | None], repeat: bytes | None, request_line: bytes) -> None:
    from harpia.handshake import _check_slowly, usual_websocket_key

    lines = [name + b": " + value for name, value in choice.items() if value is not None]
    if repeat is not None and choice[repeat] is not None:
        lines.append(repeat + b": " + choice[repeat])      # the same field twice
    head = head_with(*lines, request_line=request_line)
    try:
        expected: str | tuple[int, str] = _check_slowly(head)
    except HandshakeError as exc:
        expected = (exc.status, str(exc))
    try:
        got: str | tuple[int, str] = check_websocket_request(head)
    except HandshakeError as exc:
        got = (exc.status, str(exc))
    assert got == expected
    usual = usual_websocket_key(head)
    assert usual is None or usual == expected
    if isinstance(expected, str):
        assert expected == choice[b"Sec-WebSocket-Key"].decode()   # type: ignore[union-attr]


def test_the_usual_101_is_the_general_one() -> None:
    fast = response_101(RFC_KEY)
    general = response_101(RFC_KEY, extra_headers=[("X-A", "b")]).replace(b"\r\nX-A: b", b"")
    assert fast == general
    assert fast.endswith(b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n\r\n")
