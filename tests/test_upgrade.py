"""harpia._upgrade: the usual request head read in C agrees with the general parser and the
full handshake checks on every head it takes, and takes every usual one."""
from __future__ import annotations

import base64
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harpia._upgrade import accept_key_bytes, pack_header_fields, parse_request_head, response_101
from harpia.errors import HandshakeError
from harpia.handshake import check_websocket_request
from harpia.http_head import Headers, RequestHead
from harpia.http_parser import HttpRequestParser

LIMITS = (8192, 8192, 128, 65536)      # the parser's defaults, in parse_request_head's order
KEY = "dGhlIHNhbXBsZSBub25jZQ=="

CHROME = (b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: Upgrade\r\n"
          b"Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0\r\n"
          b"Upgrade: websocket\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n"
          b"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
          b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n"
          b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
FIREFOX = (b"GET /chat HTTP/1.1\r\nHost: [::1]:9001\r\nUser-Agent: Mozilla/5.0 (X11; rv:133.0)\r\n"
           b"Accept: */*\r\nSec-WebSocket-Version: 13\r\nOrigin: null\r\n"
           b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nConnection: keep-alive, Upgrade\r\n"
           b"Sec-Fetch-Mode: websocket\r\nPragma: no-cache\r\nUpgrade: websocket\r\n\r\n")
MINIMAL = (b"GET / HTTP/1.1\r\nhost: h\r\nupgrade: WebSocket\r\nconnection: upgrade\r\n"
           b"sec-websocket-key: " + KEY.encode() + b"\r\nsec-websocket-version: 13\r\n\r\n")
USUAL = [CHROME, FIREFOX, MINIMAL]


def general(data: bytes) -> tuple[RequestHead, bytes] | HandshakeError:
    """The general path's answer for ``data`` arriving a byte at a time."""
    parser = HttpRequestParser()
    try:
        for i in range(len(data)):
            head = parser.feed(data[i:i + 1])
            if head is not None:
                return head, data[i + 1:]
    except HandshakeError as exc:
        return exc
    raise AssertionError("no complete head")


def full_checks(head: RequestHead) -> str | None:
    try:
        return check_websocket_request(head)
    except HandshakeError:
        return None


def repeats_a_handshake_field(head: RequestHead) -> bool:
    return any(len(head.headers.get_all(name)) > 1 for name in (
        "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"))


def assert_agrees(data: bytes) -> bool:
    """The C reading of ``data`` is the general one whenever there is a C reading; returns
    whether there was."""
    found = parse_request_head(data, *LIMITS)
    if found is None:
        return False
    head, end, key = found
    expected = general(data)
    assert not isinstance(expected, HandshakeError), (data, expected)
    assert head == expected[0]
    assert head.headers.raw_items() == expected[0].headers.raw_items()    # names as sent
    assert data[end:] == expected[1]
    # The key is the full checks' answer, missing only where a handshake field repeats.
    valid = full_checks(head)
    assert key == valid or (key is None and repeats_a_handshake_field(head))
    return True


@pytest.mark.parametrize("data", USUAL, ids=["chrome", "firefox", "minimal"])
def test_usual_handshakes_take_the_fast_path_with_their_key(data: bytes) -> None:
    found = parse_request_head(data + b"\x81\x80abcd", *LIMITS)
    assert found is not None
    head, end, key = found
    assert key == KEY
    assert end == len(data)
    assert assert_agrees(data + b"\x81\x80abcd")
    assert head.method == "GET" and head.http_version == "HTTP/1.1"


def test_the_head_is_built_as_its_classes_build_it() -> None:
    # parse_request_head fills the slots itself: a slot added to either class must be here.
    found = parse_request_head(MINIMAL, *LIMITS)
    assert found is not None
    head, made = found[0], general(MINIMAL)
    assert not isinstance(made, HandshakeError)
    for name in RequestHead.__slots__:
        assert getattr(head, name) == getattr(made[0], name)
    for name in Headers.__slots__:
        assert getattr(head.headers, name) == getattr(made[0].headers, name)
    assert head.headers.get_all("upgrade") == ["WebSocket"]


def test_path_query_and_names_as_sent() -> None:
    found = parse_request_head(CHROME, *LIMITS)
    assert found is not None
    head = found[0]
    assert (head.target, head.path, head.raw_query) == ("/chat?room=1", "/chat", "room=1")
    assert head.headers.raw_items()[0] == ("Host", "example.com:8080")
    assert head.headers["SEC-WEBSOCKET-EXTENSIONS"] == "permessage-deflate; client_max_window_bits"


@pytest.mark.parametrize("data", [
    b"",
    b"GET / HTTP/1.1\r\nHost: h\r\n",                          # not complete yet
    b"\r\nGET / HTTP/1.1\r\n\r\n",                              # a leading empty line
    b"GET / HTTP/1.1\nHost: h\r\n\r\n",                          # a bare LF
    b"GET / HTTP/1.1\r\nHost: h\rx\r\n\r\n",                     # a bare CR
    b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",                    # a control character
    b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",                       # space before the colon
    b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",             # obsolete line folding
    b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
    b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",                # absolute form
    b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n",                     # a fragment
    b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
])
def test_unusual_heads_are_left_to_the_general_path(data: bytes) -> None:
    assert parse_request_head(data, *LIMITS) is None


def test_limits_send_the_head_to_the_general_path() -> None:
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(5))
    data = b"GET / HTTP/1.1\r\n" + lines + b"\r\n"
    assert parse_request_head(data, 8192, 8192, 5, 65536) is not None
    assert parse_request_head(data, 8192, 8192, 4, 65536) is None          # max_headers
    assert parse_request_head(data, 13, 8192, 128, 65536) is None          # max_request_line
    assert parse_request_head(data, 8192, 5, 128, 65536) is None           # max_header_line
    assert parse_request_head(data, 8192, 8192, 128, len(data) - 1) is None  # max_head_size
    assert parse_request_head(data, 14, 6, 5, len(data)) is not None        # exactly at each


@pytest.mark.parametrize("change, usual", [
    ((b"Upgrade: websocket", b"Upgrade: websocket, h2c"), True),
    ((b"Connection: Upgrade", b"Connection: Upgrade\r\nConnection: close"), False),
    ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), False),
    ((b"Host: example.com:8080", b"Host: exa/mple.com"), False),
    ((b"Host: example.com:8080", b"Host: "), False),
    ((KEY.encode(), b"dGhlIHNhbXBsZSBub25jZQ="), False),
    ((KEY.encode(), b"dGhlIHNhbXBsZSBub25j*Q=="), False),
    ((b"GET /chat?room=1 HTTP/1.1", b"GET /chat?room=1 HTTP/1.0"), False),
    ((b"GET /chat?room=1 HTTP/1.1", b"POST /chat?room=1 HTTP/1.1"), False),
    ((b"Pragma: no-cache", b"Pragma: no-cache\r\nPragma: x"), True),    # not a handshake field
])
def test_the_key_only_for_a_valid_handshake(change: tuple[bytes, bytes], usual: bool) -> None:
    data = CHROME.replace(*change)
    found = parse_request_head(data, *LIMITS)
    assert found is not None
    assert (found[2] == KEY) is usual
    assert assert_agrees(data)


_PIECES = [b"GET", b"POST", b" ", b"  ", b"/", b"/a?b=c", b"HTTP/1.1", b"HTTP/1.0", b"\r\n",
           b"\n", b"\r", b":", b": ", b"\t", b"Host", b"Upgrade", b"websocket", b"Connection",
           b"upgrade", b"keep-alive, Upgrade", b",", b"Sec-WebSocket-Key", KEY.encode(),
           b"Sec-WebSocket-Version", b"13", b"h:1", b"\x00", b"\x7f", b"\xe9", b"#", b"x"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40), st.sampled_from(USUAL))
def test_any_head_the_c_path_takes_reads_as_the_general_path_reads_it(
        pieces: list[bytes], usual: bytes) -> None:
    # Random heads, and usual ones with random pieces spliced in.
    assert_agrees(b"".join(pieces) + b"\r\n\r\n")
    cut = len(b"".join(pieces)) % len(usual)
    assert_agrees(usual[:cut] + b"".join(pieces) + usual[cut:])


def test_byte_mutations_of_usual_heads() -> None:
    rng = random.Random(6455)
    taken = 0
    for _ in range(3000):
        data = bytearray(rng.choice(USUAL))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data) - 4)
            if rng.random() < 0.5:
                data[i] = rng.randrange(256)
            else:
                data.insert(i, rng.choice(b" \t\r\n:,=#?/aZ\x00\x80"))
        taken += assert_agrees(bytes(data))
    assert taken > 500         # a good part of them still a head the C path takes


def test_accept_key_bytes() -> None:
    assert accept_key_bytes(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="     # RFC 6455 section 1.3
    rng = random.Random(1)
    for n in (0, 1, 24, 63, 64, 65, 200):
        key = base64.b64encode(rng.randbytes(n)).decode()[:n]
        expected = base64.b64encode(hashlib.sha1(
            key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert accept_key_bytes(key) == expected


def test_response_101() -> None:
    assert response_101(KEY) == (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\n"
                                 b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


@pytest.mark.parametrize("fields", [
    [], [("X", "")], [("A", ""), ("B", "c")], [("A", ""), ("B", "")],
    [("Host", "h:1"), ("X-Latin", "caf\xe9 \t: colon")],
    [("X-Euro", "\u20ac")],                  # beyond latin-1: only a hand-made Headers has it
])
def test_pack_header_fields_unpacks_to_the_same_fields(fields: list[tuple[str, str]]) -> None:
    from harpia.connection import unpack_header_fields

    packed = pack_header_fields(Headers(fields))
    assert packed == "\n".join(part for field in fields for part in field)
    assert unpack_header_fields(packed).raw_items() == fields


def test_response_101_for_any_key_holds_its_accept_value() -> None:
    # Not only for the 24-character keys a valid handshake has (a caller may pass any).
    for key in ("x", "y" * 64, "z" * 100):
        assert response_101(key) == (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                                     + accept_key_bytes(key) + b"\r\n\r\n")
