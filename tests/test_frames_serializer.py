"""The serializer: frames harpia writes, read back by wsproto and websockets, and frames
wsproto writes, read by harpia, in both roles and at every length-encoding boundary."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from frame_builder import (BINARY, CLOSE, CONT, PING, PONG, TEXT, build_frame,
                                 decode_frames, describe_output)
from websockets.frames import Frame as WsFrame
from websockets.streams import StreamReader
from wsproto.frame_protocol import FrameProtocol, Opcode

from harpia._frames import FrameEngine, serialize_frame

SIZES = [0, 1, 2, 3, 4, 5, 125, 126, 127, 65535, 65536, 65537, 1 << 20]


def payload_of(n: int, text: bool) -> str | bytes:
    """``n`` bytes: a str mixing 1- to 4-byte UTF-8 sequences, or every byte value."""
    if text:
        return "aé€𝄞" * (n // 10) + "x" * (n % 10)          # "aé€𝄞" is 10 bytes of UTF-8
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


def utf8_len(message: str | bytes) -> int:
    return len(message.encode()) if isinstance(message, str) else len(message)


def wsproto_read(data: bytes, *, client: bool) -> list[tuple[Opcode, Any]]:
    """Messages and control frames as wsproto in role ``client`` reads them."""
    proto = FrameProtocol(client=client, extensions=[])
    proto.receive_bytes(data)
    out: list[tuple[Opcode, Any]] = []
    pieces: list[Any] = []
    for frame in proto.received_frames():
        if frame.opcode.iscontrol():
            out.append((frame.opcode, frame.payload))
            continue
        pieces.append(frame.payload)
        if frame.message_finished:
            out.append((frame.opcode, ("" if frame.opcode is Opcode.TEXT else b"").join(pieces)))
            pieces = []
    return out


def websockets_read(data: bytes, *, mask: bool) -> list[WsFrame]:
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        parser = WsFrame.parse(reader.read_exact, mask=mask, max_size=None)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("websockets wants more bytes than harpia wrote")
    return frames


def test_payload_of_has_the_size_asked() -> None:
    for n in SIZES:
        assert utf8_len(payload_of(n, True)) == n
        assert len(payload_of(n, False)) == n


# --------------------------------------------------------------------------- harpia -> others

@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("client", [False, True])
def test_harpia_frames_read_by_wsproto_and_websockets(n: int, text: bool, client: bool) -> None:
    message = payload_of(n, text)
    engine = FrameEngine(client=client, backpressure_limit=4 << 20)
    size = engine.send(message)
    data = engine.data_to_send()
    assert size == len(data)
    header = len(data) - utf8_len(message)
    assert header == (2 if n <= 125 else 4 if n <= 65535 else 10) + (4 if client else 0)
    expected_opcode = Opcode.TEXT if text else Opcode.BINARY
    assert wsproto_read(data, client=not client) == [(expected_opcode, message)]
    (frame,) = websockets_read(data, mask=client)
    assert frame.fin and int(frame.opcode) == int(expected_opcode)
    assert frame.data == (message.encode() if isinstance(message, str) else message)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("client", [False, True])
def test_wsproto_frames_read_by_harpia(n: int, client: bool) -> None:
    # wsproto in the other role writes; harpia reads.
    proto = FrameProtocol(client=not client, extensions=[])
    for text in (False, True):
        message = payload_of(n, text)
        engine = FrameEngine(client=client, max_payload_length=2 << 20)
        engine.feed(bytes(proto.send_data(message)))
        assert engine.events_received() == [("message", message)]
    engine = FrameEngine(client=client)
    data = (bytes(proto.send_data("frag", fin=False)) + bytes(proto.ping(b"p"))
            + bytes(proto.send_data("ment")) + bytes(proto.close(1001, "gone")))
    engine.feed(data)
    assert engine.events_received() == [("ping", b"p"), ("message", "fragment"),
                                         ("close", 1001, "gone")]


@pytest.mark.parametrize("client", [False, True])
def test_control_frames_read_by_wsproto(client: bool) -> None:
    engine = FrameEngine(client=client)
    assert engine.ping(b"abc") == (9 if client else 5)
    assert engine.ping("☃") > 0
    assert engine.pong(b"x" * 125) > 0
    engine.close(4321, "done ☃")
    data = engine.data_to_send()
    assert wsproto_read(data, client=not client) == [
        (Opcode.PING, b"abc"), (Opcode.PING, "☃".encode()), (Opcode.PONG, b"x" * 125),
        (Opcode.CLOSE, (4321, "done ☃"))]


@pytest.mark.parametrize("client", [False, True])
def test_send_frame_writes_raw_fragments(client: bool) -> None:
    engine = FrameEngine(client=client)
    assert engine.send_frame(TEXT, b"ab", fin=False) == 2
    assert engine.send_frame(PING, b"") == 0
    assert engine.send_frame(CONT, "ç".encode()) == 2
    assert wsproto_read(engine.data_to_send(), client=not client) == [
        (Opcode.PING, b""), (Opcode.TEXT, "abç")]


def test_send_frame_rsv1_bit() -> None:
    engine = FrameEngine()
    engine.send_frame(BINARY, b"x", rsv1=True)
    (frame,) = decode_frames(engine.data_to_send())
    assert frame.rsv == 4 and frame.opcode == BINARY


@pytest.mark.parametrize("opcode", [-1, 16, 0x81])
def test_send_frame_refuses_an_opcode_wider_than_four_bits(opcode: int) -> None:
    engine = FrameEngine()
    with pytest.raises(ValueError, match="opcode must be 0 to 15"):
        engine.send_frame(opcode, b"x")
    assert engine.data_to_send() == b""


def test_client_frames_use_fresh_mask_keys() -> None:
    engine = FrameEngine(client=True)
    keys = set()
    for _ in range(300):                # spans several refills of the random pool
        engine.send(b"")
        keys.add(engine.data_to_send()[2:6])
    assert len(keys) > 290


@given(messages=st.lists(st.one_of(st.text(), st.binary()), max_size=8))
@settings(max_examples=150, deadline=None)
def test_harpia_client_to_harpia_server_and_back(messages: list[str | bytes]) -> None:
    client, server = FrameEngine(client=True), FrameEngine()
    for m in messages:
        assert client.send(m) > 0
        assert server.send(m) > 0
    server.feed(client.data_to_send())
    client.feed(server.data_to_send())
    expected = [("message", m) for m in messages]
    assert server.events_received() == expected
    assert client.events_received() == expected


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_send_bytes_like_is_binary(kind: Any) -> None:
    engine = FrameEngine()
    engine.send(kind(b"\x00\x01"))
    assert describe_output(engine.data_to_send(), masked=False) == [("binary", b"\x00\x01")]


def test_send_str_subclass_is_text() -> None:
    class S(str):
        pass

    engine = FrameEngine()
    engine.send(S("hi"))
    engine.send_text("yo")
    engine.send_binary(b"b")
    engine.send_binary(b"")
    assert describe_output(engine.data_to_send(), masked=False) == [
        ("text", "hi"), ("text", "yo"), ("binary", b"b"), ("binary", b"")]


@pytest.mark.parametrize("bad", [1, None, 1.5, ["a"], {"a": 1}])
def test_send_rejects_other_types(bad: Any) -> None:
    engine = FrameEngine()
    with pytest.raises(TypeError):
        engine.send(bad)
    assert engine.data_to_send() == b""


def test_send_lone_surrogate_raises_and_queues_nothing() -> None:
    engine = FrameEngine()
    with pytest.raises(UnicodeEncodeError):
        engine.send("\ud800")
    assert engine.data_to_send() == b""


def test_control_payload_limits() -> None:
    engine = FrameEngine()
    with pytest.raises(ValueError):
        engine.ping(b"x" * 126)
    with pytest.raises(ValueError):
        engine.pong(b"x" * 126)
    assert engine.data_to_send() == b""


# --------------------------------------------------------------------------- serialize_frame

@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("mask", [None, b"\x00\x00\x00\x00", b"\x01\x02\x03\x04"])
def test_serialize_frame_matches_reference(n: int, mask: bytes | None) -> None:
    payload = payload_of(n, False)
    assert isinstance(payload, bytes)
    for opcode, fin, rsv1 in [(BINARY, True, False), (TEXT, False, True), (CONT, True, False)]:
        got = serialize_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=mask)
        assert got == build_frame(opcode, payload, fin=fin, rsv=4 if rsv1 else 0, mask=mask)


def test_serialize_frame_arguments() -> None:
    assert serialize_frame(TEXT, "é") == build_frame(TEXT, "é".encode())
    assert serialize_frame(CLOSE, bytearray(b"\x03\xe8")) == build_frame(CLOSE, b"\x03\xe8")
    assert serialize_frame(PONG, memoryview(b"x"), mask=bytearray(b"abcd")) == \
        build_frame(PONG, b"x", mask=b"abcd")
    with pytest.raises(ValueError):
        serialize_frame(BINARY, b"", mask=b"abc")
    assert serialize_frame(PING, b"") == b"\x89\x00"
