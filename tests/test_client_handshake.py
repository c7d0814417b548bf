"""The client side of the opening handshake, sans-I/O: URLs, the request, response checks."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from harpia.client_handshake import ClientHandshake, parse_url
from harpia.errors import HandshakeError
from harpia.handshake import accept_key


def test_parse_url_forms() -> None:
    t = parse_url("ws://example.com/chat?room=1")
    assert (t.secure, t.host, t.port, t.resource, t.host_header) == (
        False, "example.com", 80, "/chat?room=1", "example.com")
    t = parse_url("wss://example.com")
    assert (t.secure, t.port, t.resource, t.host_header) == (True, 443, "/", "example.com")
    t = parse_url("ws://[::1]:9001/x")
    assert (t.host, t.port, t.host_header) == ("::1", 9001, "[::1]:9001")
    t = parse_url("WSS://h:443/")
    assert t.host_header == "h" and t.secure


@pytest.mark.parametrize("url, words", [
    ("http://example.com/", "not a WebSocket URL"),
    ("ws:///path", "no host"),
    ("ws://h:99999/", "bad port"),
    ("ws://h/#frag", "fragment"),
    ("ws://user:pw@h/", "credentials"),
])
def test_parse_url_refuses(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_url(url)


def test_request_is_accepted_by_wsproto() -> None:
    """wsproto, as the server, reads our request and answers; we accept its answer."""
    hs = ClientHandshake(parse_url("ws://localhost:8000/chat?x=1"), subprotocols=["a", "b"],
                         headers={"Origin": "http://localhost"}, per_message_deflate=True)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(hs.request())
    (request,) = list(server.events())
    assert isinstance(request, Request)
    assert request.target == "/chat?x=1" and request.host == "localhost:8000"
    assert request.subprotocols == ["a", "b"]
    assert any(name.lower() == b"origin" for name, _ in request.extra_headers)
    reply = server.send(AcceptConnection(subprotocol="b"))
    # Whole, byte by byte, and with the first frame right behind the head.
    result = hs.feed(reply)
    assert result is not None and result.status == 101 and result.subprotocol == "b"
    assert result.trailing == b""
    hs2 = ClientHandshake(parse_url("ws://localhost:8000/"), subprotocols=["b"], key=hs.key)
    for i in range(len(reply) - 1):
        assert hs2.feed(reply[i:i + 1]) is None
    result = hs2.feed(reply[-1:] + b"\x81\x02hi")
    assert result is not None and result.trailing == b"\x81\x02hi" and result.subprotocol == "b"


def _response(key: str, *extra: str, accept: str | None = None) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept if accept is not None else accept_key(key)}",
             *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("extra, accept, words", [
    ((), "x" * 28, "Sec-WebSocket-Accept"),
    (("Sec-WebSocket-Protocol: other",), None, "not offered"),
    (("Sec-WebSocket-Extensions: x-webkit-deflate",), None, "not offered"),
    (("Sec-WebSocket-Extensions: permessage-deflate",), None, "not offered"),
])
def test_bad_101_is_refused(extra: tuple[str, ...], accept: str | None, words: str) -> None:
    hs = ClientHandshake(parse_url("ws://h/"), subprotocols=["chat"])
    with pytest.raises(HandshakeError, match=words) as info:
        hs.feed(_response(hs.key, *extra, accept=accept))
    assert info.value.status == 101


@pytest.mark.parametrize("params, words", [
    ("; server_max_window_bits=16", "bad permessage-deflate"),
    ("; server_no_context_takeover; server_no_context_takeover", "twice"),
    ("; mystery", "unknown"),
    ("; client_no_context_takeover=1", "takes no value"),
])
def test_bad_deflate_answer_is_refused(params: str, words: str) -> None:
    hs = ClientHandshake(parse_url("ws://h/"), per_message_deflate=True)
    with pytest.raises(HandshakeError, match=words):
        hs.feed(_response(hs.key, f"Sec-WebSocket-Extensions: permessage-deflate{params}"))


def test_deflate_answer_becomes_engine_settings() -> None:
    hs = ClientHandshake(parse_url("ws://h/"), per_message_deflate=True)
    assert b"permessage-deflate; client_max_window_bits" in hs.request()
    result = hs.feed(_response(hs.key, "Sec-WebSocket-Extensions: permessage-deflate; "
                                       "server_no_context_takeover; client_max_window_bits=10"))
    assert result is not None and result.deflate is not None
    assert result.deflate.engine_settings() == {
        "local_no_context_takeover": False, "remote_no_context_takeover": True,
        "local_max_window_bits": 10, "remote_max_window_bits": 15}


def test_refusal_carries_status_headers_and_body() -> None:
    hs = ClientHandshake(parse_url("ws://h/"))
    head = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\nWWW-Authenticate: Bearer\r\n\r\n"
    assert hs.feed(head + b"missing") is None          # body not complete yet
    with pytest.raises(HandshakeError) as info:
        hs.feed(b" token")
    assert info.value.status == 401 and info.value.message == "missing token"
    assert info.value.headers["WWW-Authenticate"] == "Bearer"


def test_refusal_without_length_ends_at_eof() -> None:
    hs = ClientHandshake(parse_url("ws://h/"))
    assert hs.feed(b"HTTP/1.1 503 Busy\r\n\r\ncome back later") is None
    with pytest.raises(HandshakeError, match="come back later"):
        hs.feed(b"", eof=True)


def test_redirect_is_resolved_against_the_url() -> None:
    hs = ClientHandshake(parse_url("ws://h:1/a/b"))
    result = hs.feed(b"HTTP/1.1 302 Found\r\nLocation: /c\r\nContent-Length: 0\r\n\r\n")
    assert result is not None and result.status == 302 and result.location == "ws://h:1/c"


@pytest.mark.parametrize("data, words", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 response"),
    (b"HTTP/1.1 101 OK\r\nbad header\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 101 OK\r\n" + b"X: y\r\n" * 300 + b"\r\n", "header lines"),
    (b"HTTP/1.1 101 OK\r\nX: " + b"y" * 20000, "over 16384 bytes"),
])
def test_garbage_is_refused_with_status_0(data: bytes, words: str) -> None:
    with pytest.raises(HandshakeError, match=words) as info:
        ClientHandshake(parse_url("ws://h/")).feed(data)
    assert info.value.status == 0


def test_eof_before_the_head() -> None:
    hs = ClientHandshake(parse_url("ws://h/"))
    assert hs.feed(b"HTTP/1.1 101") is None
    with pytest.raises(HandshakeError, match="before the response head"):
        hs.feed(b"", eof=True)


@pytest.mark.parametrize("headers", [{"X\r\nEvil": "1"}, {"X": "a\r\nEvil: 1"}])
def test_header_injection_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ClientHandshake(parse_url("ws://h/"), headers=headers)


def test_random_splits() -> None:
    rng = random.Random(7)
    for _ in range(50):
        hs = ClientHandshake(parse_url("ws://h/"), subprotocols=["p"])
        data = _response(hs.key, "Sec-WebSocket-Protocol: p")
        cuts = sorted(rng.sample(range(1, len(data)), 5))
        result = None
        for a, b in zip([0, *cuts], [*cuts, len(data)]):
            assert result is None
            result = hs.feed(data[a:b])
        assert result is not None and result.subprotocol == "p" and result.trailing == b""


def test_a_url_is_split_once_and_offers_are_shared() -> None:
    """Connections to one URL reuse its parsed target and request text; each has its own key."""
    assert parse_url("ws://h:1/a?b") is parse_url("ws://h:1/a?b")
    one = ClientHandshake(parse_url("ws://h/"), subprotocols=["p"], headers={"X-A": "1"})
    two = ClientHandshake(parse_url("ws://h/"), subprotocols=["p"], headers=[("X-A", "1")])
    assert one.key != two.key
    assert one.request().replace(one.key.encode(), b"KEY") == \
        two.request().replace(two.key.encode(), b"KEY")
    assert f"Sec-WebSocket-Key: {one.key}\r\n".encode() in one.request()


def test_header_values_must_be_str() -> None:
    with pytest.raises(ValueError, match="must be str"):
        ClientHandshake(parse_url("ws://h/"), headers={"X-A": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("upgrade, connection", [
    ("websocket", "Upgrade"), ("WebSocket", "keep-alive, upgrade"), ("  websocket  ", "UPGRADE"),
])
def test_101_field_forms_are_accepted(upgrade: str, connection: str) -> None:
    hs = ClientHandshake(parse_url("ws://h/"))
    data = (f"HTTP/1.1 101 Switching Protocols\r\nServer: x\r\nupgrade:{upgrade}\r\n"
            f"CONNECTION: {connection}\r\nsec-websocket-accept: {accept_key(hs.key)}\r\n"
            "X-Empty:\r\n\r\n").encode()
    result = hs.feed(data)
    assert result is not None and result.status == 101
    # Every field is still there for whoever asks (parsed on demand).
    assert result.headers["server"] == "x" and result.headers["x-empty"] == ""
    assert result.headers.get_all("connection") == [connection.strip()]


def test_101_with_two_upgrade_values_is_refused() -> None:
    hs = ClientHandshake(parse_url("ws://h/"))
    with pytest.raises(HandshakeError, match="Upgrade"):
        hs.feed(_response(hs.key, "Upgrade: h2c"))


# ---------------------------------------------------------------- the usual 101, fast

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
_ACCEPT = accept_key(_KEY)

#: Header lines a 101 may carry: the usual three in several spellings, and everything the
#: one-pass check must leave to the full one (wrong values, repeats, offers, bad lines).
_LINES = [
    "Upgrade: websocket", "upgrade:WebSocket", "UPGRADE: \twebsocket \t", "Upgrade: h2c",
    "Upgrade: websocket, h2c", "Connection: Upgrade", "connection: upgrade ",
    "Connection: keep-alive, Upgrade", "Connection: close",
    f"Sec-WebSocket-Accept: {_ACCEPT}", f"sec-websocket-accept:{_ACCEPT}\t",
    f"Sec-WebSocket-Accept: {_ACCEPT.lower()}", "Sec-WebSocket-Accept: ",
    "Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate",
    "Date: Mon, 07 Dec 2026 07:00:00 GMT", "Server: test", "X-Upgrade: websocket",
    "Upgrade-Insecure: 1", "Bad Name: x", "no colon here", ": empty name", "X-Empty:",
    "X-Lone: a\rb", "X-Lone: a\nb", "X-Latin: caf\xe9",
]
_STATUS_LINES = ["HTTP/1.1 101 Switching Protocols", "HTTP/1.1 101", "HTTP/1.0 101 OK",
                 "HTTP/1.1 101x", "HTTP/2 101", "HTTP/1.1 200 OK"]


def _outcome(hs: ClientHandshake, pieces: list[bytes]) -> object:
    """What feeding ``pieces`` one by one gives: the result, or the error's status and text."""
    try:
        result = None
        for piece in pieces:
            result = hs.feed(piece)
        return result if result is not None else hs.feed(b"", eof=True)
    except HandshakeError as exc:
        return ("refused", exc.status, str(exc))


#: Most examples start from one line of each group (in any order), then add to them.
_USUAL_LINES = st.tuples(
    st.sampled_from([line for line in _LINES if line.lower().startswith("upgrade:")]),
    st.sampled_from([line for line in _LINES if line.lower().startswith("connection:")]),
    st.sampled_from([line for line in _LINES if line.lower().startswith("sec-websocket-accept:")]
                    + [f"Sec-WebSocket-Accept: {_ACCEPT[:-2]}x=", f"Sec-WebSocket-Accept: {_ACCEPT}x"]),
).flatmap(st.permutations)


@settings(max_examples=400, deadline=None)
@given(status=st.sampled_from(_STATUS_LINES),
       usual=st.one_of(_USUAL_LINES, st.just([])),
       extra=st.lists(st.sampled_from(_LINES), max_size=5),
       extra_first=st.booleans(),
       trailing=st.sampled_from([b"", b"\x88\x02\x03\xe8"]),
       subprotocols=st.sampled_from([(), ("chat",)]))
def test_usual_101_check_agrees_with_the_full_check(
        status: str, usual: list[str], extra: list[str], extra_first: bool, trailing: bytes,
        subprotocols: tuple[str, ...]) -> None:
    """Whole (the one-pass check when the head is usual) and split at every byte (always
    the full check): the same result, or the same refusal."""
    lines = extra + usual if extra_first else usual + extra
    data = ("\r\n".join([status, *lines]) + "\r\n\r\n").encode("latin-1") + trailing
    target = parse_url("ws://h/")

    def fresh() -> ClientHandshake:
        return ClientHandshake(target, subprotocols=subprotocols, key=_KEY)
    end = data.index(b"\r\n\r\n")
    usual = fresh()._usual_101(data, end)
    whole = _outcome(fresh(), [data])
    if usual is not None:
        assert whole == usual
    for i in range(1, end + 4):                     # the head split, the frames behind it
        assert _outcome(fresh(), [data[:i], data[i:]]) == whole


@pytest.mark.parametrize("lines", [
    ("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {_ACCEPT}"),
    ("sec-websocket-accept: " + _ACCEPT, "connection: upgrade", "upgrade: WebSocket",
     "Date: Mon, 07 Dec 2026 07:00:00 GMT", "Server: uWebSockets"),
])
def test_usual_101_taken_in_one_pass(lines: tuple[str, ...]) -> None:
    data = ("\r\n".join(["HTTP/1.1 101 Switching Protocols", *lines]) + "\r\n\r\n").encode()
    hs = ClientHandshake(parse_url("ws://h/"), key=_KEY)
    assert hs._usual_101(data + b"\x81\x00", len(data) - 4) is not None
    result = hs.feed(data + b"\x81\x00")
    assert result is not None and result.trailing == b"\x81\x00" and result.subprotocol is None
    assert result.headers.get("upgrade", "").lower() == "websocket"


@pytest.mark.parametrize("extra", [
    ("Sec-WebSocket-Protocol: chat",),              # the full check says it was not offered
    ("Upgrade: websocket",),                        # twice
    ("X-Lone: a\rb",),
])
def test_unusual_101_left_to_the_full_check(extra: tuple[str, ...]) -> None:
    data = _response(_KEY, *extra)
    hs = ClientHandshake(parse_url("ws://h/"), key=_KEY)
    assert hs._usual_101(data, data.index(b"\r\n\r\n")) is None
