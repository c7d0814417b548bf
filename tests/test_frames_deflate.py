"""permessage-deflate in the frame engine (harpia._frames + harpia._deflate), sans-I/O.

Differential: the same messages go through harpia's server engine and through the
permessage-deflate of wsproto and of websockets as the client, in each direction, for
each negotiated parameter set, whole and fragmented, over several messages (context
takeover).  Then the limits: bombs, invalid UTF-8 and corrupt data inside compressed
messages, RSV1 rules, thresholds, publish groups, and the memory a connection keeps.
"""
from __future__ import annotations

import json
import os
import random
import resource
import time
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Message, TextMessage
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

from harpia import _deflate
from harpia._frames import FrameEngine, serialize_frame
from harpia._loop import LoopContext
from harpia._publish import publish
from harpia.deflate import DeflateOptions, negotiate
from harpia.handshake import parse_extension_offers
from harpia.http_parser import HttpRequestParser

TEXT, BINARY, CONT, PING, CLOSE = 1, 2, 0, 9, 8
MASK = b"\x12\x34\x56\x78"
MiB = 1024 * 1024


def offers(value: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    head = HttpRequestParser().feed(
        f"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: {value}\r\n\r\n".encode())
    assert head is not None
    return parse_extension_offers(head)


def json_text(n: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    items = []
    while sum(map(len, items)) < n:
        items.append(json.dumps({"id": rnd.randrange(10**6), "user": f"user{rnd.randrange(500)}",
                                 "active": rnd.random() < 0.5, "tags": ["a", "bb", "ccc"][:rnd.randrange(4)]}))
    return ("[" + ",".join(items) + "]")[:n]


MESSAGES: list[str | bytes] = [
    json_text(2000),
    json_text(2000),                                    # the same again: context takeover pays
    "héllo wörld ✓ " * 40,
    "",
    b"",
    os.urandom(3000),                                   # incompressible
    json_text(200_000, seed=1).encode(),
    "x",
]

# (harpia's options, the client's parameters as wsproto and websockets name them)
PARAMETER_SETS: list[tuple[DeflateOptions, dict[str, Any]]] = [
    (DeflateOptions(compress_threshold=0), {}),
    (DeflateOptions(server_no_context_takeover=False, client_no_context_takeover=False,
                    compress_threshold=0), {}),
    (DeflateOptions(server_no_context_takeover=False, client_no_context_takeover=False,
                    compress_threshold=0), {"server_no_context_takeover": True}),
    (DeflateOptions(client_no_context_takeover=False, client_max_window_bits=9,
                    compress_threshold=0), {"server_max_window_bits": 10}),
    (DeflateOptions(server_no_context_takeover=False, server_max_window_bits=11,
                    compression_level=1, memory_level=3, compress_threshold=0),
     {"client_no_context_takeover": True}),
]
SET_IDS = ["defaults", "context-takeover", "client-forbids-server-context", "windows",
           "server-window-11-level-1"]


def harpia_server(options: DeflateOptions, offer: str) -> tuple[FrameEngine, str]:
    """A server engine with what ``offer`` negotiates, and the response header value."""
    agreement = negotiate(offers(offer), options)
    assert agreement is not None
    engine = FrameEngine()
    engine.enable_deflate(**agreement.engine_settings(options))
    return engine, agreement.response


def message_events(engine: FrameEngine) -> list[str | bytes]:
    events = engine.events_received()
    assert all(e[0] == "message" for e in events), events
    return [e[1] for e in events]


# --------------------------------------------------------------------------- wsproto

def wsproto_pair(options: DeflateOptions, client: dict[str, Any]) -> tuple[FrameEngine, Connection]:
    extension = WsprotoDeflate(**client)
    server, response = harpia_server(options, "permessage-deflate; " + extension.offer())
    extension.finalize(response)
    return server, Connection(ConnectionType.CLIENT, extensions=[extension])


def wsproto_received(conn: Connection, data: bytes) -> list[str | bytes]:
    conn.receive_data(data)
    out: list[str | bytes] = []
    parts: list[Any] = []
    for event in conn.events():
        assert isinstance(event, Message), event
        parts.append(event.data)
        if event.message_finished:
            out.append("".join(parts) if isinstance(event, TextMessage) else b"".join(parts))
            parts = []
    return out


@pytest.mark.parametrize("options, client", PARAMETER_SETS, ids=SET_IDS)
def test_wsproto_client_to_harpia(options: DeflateOptions, client: dict[str, Any]) -> None:
    server, conn = wsproto_pair(options, client)
    for message in MESSAGES:
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        wire = conn.send(event)
        if len(message) > 100 and message not in (MESSAGES[5],):
            assert wire[0] & 0x40, "wsproto compressed it"
        server.feed(wire)
        assert message_events(server) == [message]


@pytest.mark.parametrize("options, client", PARAMETER_SETS, ids=SET_IDS)
def test_harpia_to_wsproto_client(options: DeflateOptions, client: dict[str, Any]) -> None:
    server, conn = wsproto_pair(options, client)
    for message in MESSAGES:
        server.send(message)
        wire = server.data_to_send()
        assert wsproto_received(conn, wire) == [message]


@pytest.mark.parametrize("options, client", PARAMETER_SETS, ids=SET_IDS)
def test_wsproto_fragmented_messages_to_harpia(options: DeflateOptions, client: dict[str, Any]) -> None:
    server, conn = wsproto_pair(options, client)
    for message in MESSAGES[:3] + MESSAGES[6:7]:
        size = len(message) // 3 + 1
        pieces = [message[i:i + size] for i in range(0, len(message), size)]
        frames = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            frames.append(conn.send(TextMessage(piece, message_finished=last)
                                    if isinstance(piece, str)
                                    else BytesMessage(piece, message_finished=last)))
        assert len(frames) > 1 and frames[0][0] & 0x40 and frames[1][0] & 0x40 == 0
        # A ping between the fragments: control frames are never compressed.
        frames.insert(1, serialize_frame(PING, b"hi", mask=MASK))
        server.feed(b"".join(frames))
        assert server.events_received() == [("ping", b"hi"), ("message", message)]


# --------------------------------------------------------------------------- websockets

def websockets_pair(options: DeflateOptions, client: dict[str, Any]) -> tuple[FrameEngine, ClientProtocol]:
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=True, **client)
    offer = "; ".join(["permessage-deflate"] + [
        n if v is None else f"{n}={v}" for n, v in factory.get_request_params()])
    server, response = harpia_server(options, offer)
    params = offers(response)[0][1]
    protocol = ClientProtocol(parse_uri("ws://example.com/"), state=State.OPEN, max_size=None)
    protocol.extensions = [factory.process_response_params(params, [])]
    return server, protocol


def websockets_received(protocol: ClientProtocol, data: bytes) -> list[str | bytes]:
    protocol.receive_data(data)
    out: list[str | bytes] = []
    parts: list[bytes] = []
    opcode = None
    for frame in protocol.events_received():
        assert isinstance(frame, Frame)
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            opcode = frame.opcode
        parts.append(frame.data)
        if frame.fin:
            data_ = b"".join(parts)
            out.append(data_.decode() if opcode == Opcode.TEXT else data_)
            parts = []
    return out


def websockets_send(protocol: ClientProtocol, message: str | bytes, fragment: int = 0) -> bytes:
    data = message.encode() if isinstance(message, str) else message
    pieces = [data[i:i + fragment] for i in range(0, len(data), fragment)] if fragment else [data]
    pieces = pieces or [b""]
    for i, piece in enumerate(pieces):
        fin = i == len(pieces) - 1
        if i:
            protocol.send_continuation(piece, fin=fin)
        elif isinstance(message, str):
            protocol.send_text(piece, fin=fin)
        else:
            protocol.send_binary(piece, fin=fin)
    return b"".join(protocol.data_to_send())


@pytest.mark.parametrize("fragment", [0, 999], ids=["whole", "fragmented"])
@pytest.mark.parametrize("options, client", PARAMETER_SETS, ids=SET_IDS)
def test_websockets_client_to_harpia(options: DeflateOptions, client: dict[str, Any],
                                     fragment: int) -> None:
    server, protocol = websockets_pair(options, client)
    for message in MESSAGES:
        if fragment and isinstance(message, str) and not message.isascii():
            continue            # fragments of UTF-8 cut anywhere are not text on their own
        server.feed(websockets_send(protocol, message, fragment))
        assert message_events(server) == [message]


@pytest.mark.parametrize("options, client", PARAMETER_SETS, ids=SET_IDS)
def test_harpia_to_websockets_client(options: DeflateOptions, client: dict[str, Any]) -> None:
    server, protocol = websockets_pair(options, client)
    for message in MESSAGES:
        server.send(message)
        assert websockets_received(protocol, server.data_to_send()) == [message]


def test_byte_by_byte_and_random_splits() -> None:
    server, protocol = websockets_pair(*PARAMETER_SETS[1])
    wire = b"".join(websockets_send(protocol, m, 300) for m in MESSAGES[:3])
    for byte in range(len(wire)):
        server.feed(wire[byte:byte + 1])
    assert message_events(server) == MESSAGES[:3]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
       takeover=st.booleans())
def test_round_trip_between_harpia_engines(messages: list[str | bytes], cuts: list[int],
                                           takeover: bool) -> None:
    settings_ = dict(local_no_context_takeover=not takeover, remote_no_context_takeover=not takeover,
                     compress_threshold=0)
    server, client = FrameEngine(), FrameEngine(client=True)
    server.enable_deflate(**settings_)
    client.enable_deflate(**settings_)
    for message in messages:
        client.send(message, compress=True)
        server.send(message, compress=True)
    wire = client.data_to_send()
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(wire)}), len(wire)]
    for a, b in zip(bounds, bounds[1:]):
        server.feed(wire[a:b])
    assert message_events(server) == messages
    client.feed(server.data_to_send())
    assert message_events(client) == messages


# --------------------------------------------------------------------------- what goes out

def deflated(data: bytes, wbits: int = 15) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def server_with(**kw: Any) -> FrameEngine:
    engine = FrameEngine(max_payload_length=kw.pop("max_payload_length", 16 * MiB))
    engine.enable_deflate(**kw)
    return engine


def test_compressed_frame_has_rsv1_and_zlib_payload() -> None:
    engine = server_with()
    text = json_text(5000)
    engine.send(text)
    wire = engine.data_to_send()
    assert wire[0] == 0xC1                              # FIN, RSV1, text
    payload = wire[4:]
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == text.encode()


def test_threshold_and_per_send_override() -> None:
    engine = server_with(compress_threshold=100)
    small, big = "a" * 99, "a" * 100
    engine.send(small)
    assert engine.data_to_send()[0] == 0x81             # under the threshold: plain
    engine.send(big)
    assert engine.data_to_send()[0] == 0xC1
    engine.send(small, compress=True)
    assert engine.data_to_send()[0] == 0xC1
    engine.send(big, compress=False)
    assert engine.data_to_send()[0] == 0x81
    engine.send_text(big)
    assert engine.data_to_send()[0] == 0xC1
    engine.send_binary(big.encode())
    assert engine.data_to_send()[0] == 0xC2


def test_incompressible_data_goes_plain_without_context() -> None:
    engine = server_with(compress_threshold=0)
    noise = os.urandom(4000)
    engine.send(noise)
    wire = engine.data_to_send()
    assert wire[0] == 0x82 and wire[4:] == noise


def test_no_deflate_negotiated_ignores_compress() -> None:
    engine = FrameEngine()
    engine.send("a" * 1000, compress=True)
    assert engine.data_to_send()[0] == 0x81
    assert engine.compression is None


def test_window_8_sends_plain() -> None:
    engine = server_with(local_max_window_bits=8, compress_threshold=0)
    assert engine.compression is not None and not engine.compression.can_compress
    engine.send("a" * 1000)
    assert engine.data_to_send()[0] == 0x81
    # ...but still inflates what the client compresses with its own window.
    engine.feed(serialize_frame(TEXT, deflated(b"b" * 1000), rsv1=True, mask=MASK))
    assert message_events(engine) == ["b" * 1000]


def test_large_compressed_message_is_written_directly() -> None:
    engine = server_with()
    written: list[bytes] = []
    engine.attach(written.append, None, lambda parts: written.extend(parts))
    text = json_text(2 * MiB)
    assert engine.send(text) > 0
    wire = b"".join(written)
    assert wire[0] == 0xC1 and len(wire) < len(text) // 2
    client = FrameEngine(client=True)
    client.enable_deflate(compress_threshold=0)
    client.feed(wire)
    assert message_events(client) == [text]


def test_drop_before_compressing_keeps_the_context_in_step() -> None:
    engine = FrameEngine(backpressure_limit=1000)
    engine.enable_deflate(local_no_context_takeover=False, compress_threshold=0)
    client = FrameEngine(client=True)
    client.enable_deflate(remote_no_context_takeover=False)
    engine.send(os.urandom(2000))                     # over the limit: -1, queued
    assert engine.send(json_text(3000)) == 0          # dropped, never compressed
    client.feed(engine.data_to_send())
    engine.send(json_text(3000))
    client.feed(engine.data_to_send())
    assert [type(m) for m in message_events(client)] == [bytes, str]


# --------------------------------------------------------------------------- limits

def test_compression_bomb_closes_with_1009_before_the_memory_is_spent() -> None:
    # A 1 KiB frame that inflates to 1 GiB: zeros compress ~1000:1 per deflate block, so
    # the frame is built from one block repeated (each block is self-contained).
    block = deflated(b"\0" * MiB)
    frame_payload = block                                # ~1 KiB: 1 MiB of zeros
    assert len(frame_payload) < 1100
    engine = server_with(max_payload_length=MiB // 2)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    engine.feed(serialize_frame(BINARY, frame_payload, rsv1=True, mask=MASK))
    assert engine.events_received() == [("protocol_error", 1009, "message over the 524288-byte limit")]
    assert time.perf_counter() - started < 0.5
    # A gigabyte of zeros in ~1 MiB of wire: fails as soon as the limit is crossed.
    engine = server_with(max_payload_length=MiB)
    payload = (block + b"\x00\x00\xff\xff") * 1024      # sync-flushed blocks chain up
    engine.feed(serialize_frame(BINARY, payload, rsv1=True, mask=MASK))
    assert engine.events_received()[0][:2] == ("protocol_error", 1009)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 64 * 1024  # KiB


def test_bomb_across_fragments() -> None:
    engine = server_with(max_payload_length=100_000)
    block = deflated(b"\0" * 60_000)
    tail = b"\x00\x00\xff\xff"
    engine.feed(serialize_frame(BINARY, block + tail, fin=False, rsv1=True, mask=MASK))
    assert engine.events_received() == []
    engine.feed(serialize_frame(CONT, block + tail + block, fin=True, mask=MASK))
    assert engine.events_received()[0][:2] == ("protocol_error", 1009)


def test_message_exactly_at_the_limit_passes() -> None:
    engine = server_with(max_payload_length=50_000)
    engine.feed(serialize_frame(BINARY, deflated(b"a" * 50_000), rsv1=True, mask=MASK))
    assert message_events(engine) == [b"a" * 50_000]
    engine.feed(serialize_frame(BINARY, deflated(b"a" * 50_001), rsv1=True, mask=MASK))
    assert engine.events_received()[0][:2] == ("protocol_error", 1009)


def test_max_inflated_length_bounds_compressed_messages_only() -> None:
    engine = server_with(max_payload_length=16 * MiB, max_inflated_length=50_000)
    engine.feed(serialize_frame(BINARY, deflated(b"a" * 50_000), rsv1=True, mask=MASK))
    engine.feed(serialize_frame(BINARY, b"b" * 60_000, mask=MASK))     # not compressed
    assert message_events(engine) == [b"a" * 50_000, b"b" * 60_000]
    engine.feed(serialize_frame(BINARY, deflated(b"a" * 50_001), rsv1=True, mask=MASK))
    assert engine.events_received() == [("protocol_error", 1009, "message over the 50000-byte limit")]
    # The compressed bytes are bounded by the lower limit too, from the frame header.
    engine = server_with(max_payload_length=16 * MiB, max_inflated_length=50_000)
    header = serialize_frame(BINARY, os.urandom(60_000), rsv1=True, mask=MASK)[:14]
    engine.feed(header)
    assert engine.events_received() == [("protocol_error", 1009, "message over the 50000-byte limit")]


def test_a_compression_ratio_over_the_cap_closes_1009_past_one_mebibyte() -> None:
    zeros = deflated(bytes(4 * MiB))                       # ~1000:1
    engine = server_with(max_compression_ratio=100)
    started = time.perf_counter()
    engine.feed(serialize_frame(BINARY, zeros, rsv1=True, mask=MASK))
    assert engine.events_received() == [
        ("protocol_error", 1009, "compression ratio over 100:1 (past 1048576 bytes)")]
    assert time.perf_counter() - started < 0.5
    # Under 1 MiB inflated any ratio passes; above it, ordinary data is far under 100:1.
    engine = server_with(max_compression_ratio=100)
    engine.feed(serialize_frame(BINARY, deflated(bytes(MiB)), rsv1=True, mask=MASK))
    data = json_text(256 * 1024, seed=2).encode() * 16      # JSON, repeated: still ~20:1
    assert len(data) / len(deflated(data)) < 50
    engine.feed(serialize_frame(TEXT, deflated(data), rsv1=True, mask=MASK))
    assert message_events(engine) == [bytes(MiB), data.decode()]
    # Split into fragments, the ratio is the message's, not a frame's.
    engine = server_with(max_compression_ratio=100)
    engine.feed(serialize_frame(BINARY, zeros[:500], fin=False, rsv1=True, mask=MASK))
    engine.feed(serialize_frame(CONT, zeros[500:], mask=MASK))
    assert engine.events_received()[0][:2] == ("protocol_error", 1009)
    # No cap: the same bomb is only a large message.
    engine = server_with(max_compression_ratio=0)
    engine.feed(serialize_frame(BINARY, zeros, rsv1=True, mask=MASK))
    assert message_events(engine) == [bytes(4 * MiB)]


def test_inflating_stops_inside_a_frame_once_a_turn_has_inflated_256_kib() -> None:
    # A 8 KB frame that inflates to 8 MiB is inflated 256 KiB per loop turn: the loop runs
    # other connections in between instead of ~10 ms of zlib at once.
    turns: list[Any] = []
    engine = server_with()
    engine.attach(lambda data: None, LoopContext(turns.append))
    payload = bytes(8 * MiB)
    wire = serialize_frame(BINARY, deflated(payload), rsv1=True, mask=MASK)
    engine.feed(wire + serialize_frame(TEXT, deflated(b"next"), rsv1=True, mask=MASK))
    events: list[Any] = []
    passes = 0
    while not events and passes < 100:
        assert engine.held_bytes > 0                        # the rest waits, masked
        callbacks, turns[:] = list(turns), []
        for callback in callbacks:
            callback()
        passes += 1
        events += engine.events_received()
    assert 31 <= passes <= 33, passes
    if len(events) == 1:                                   # "next" comes a turn later
        for callback in list(turns):
            callback()
        events += engine.events_received()
    assert events == [("message", payload), ("message", "next")]


def test_invalid_utf8_inside_compressed_text_fails_fast() -> None:
    engine = server_with()
    bad = deflated(b"ok " * 10 + b"\xff" + b"z" * 100_000)
    # Only the first slice of the frame arrives: the 1007 comes before the rest.
    wire = serialize_frame(TEXT, bad, rsv1=True, mask=MASK)
    engine.feed(wire[:60])
    assert engine.events_received() == [("protocol_error", 1007, "invalid UTF-8 in a text message")]


def test_utf8_split_across_compressed_fragments() -> None:
    engine = server_with()
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    text = "ünïcödé ✓".encode()
    first = c.compress(text[:2]) + c.flush(zlib.Z_SYNC_FLUSH)     # cuts "ü" in half
    rest = c.compress(text[2:]) + c.flush(zlib.Z_SYNC_FLUSH)
    engine.feed(serialize_frame(TEXT, first, fin=False, rsv1=True, mask=MASK))
    engine.feed(serialize_frame(CONT, rest[:-4], mask=MASK))
    assert message_events(engine) == [text.decode()]
    # Ends inside a sequence: 1007 at the end of the message.
    engine.feed(serialize_frame(TEXT, deflated(text[:1]), rsv1=True, mask=MASK))
    assert engine.events_received()[0][:2] == ("protocol_error", 1007)


def test_corrupt_compressed_data_is_1007() -> None:
    engine = server_with()
    engine.feed(serialize_frame(BINARY, b"\xff\xff\xff\xff garbage", rsv1=True, mask=MASK))
    assert engine.events_received() == [("protocol_error", 1007, "invalid compressed data")]


def test_data_after_a_final_block_is_1007_and_a_final_block_alone_is_fine() -> None:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    final = c.compress(b"hello") + c.flush(zlib.Z_FINISH)
    engine = server_with(remote_no_context_takeover=False)
    engine.feed(serialize_frame(BINARY, final, rsv1=True, mask=MASK))
    engine.feed(serialize_frame(BINARY, deflated(b"again"), rsv1=True, mask=MASK))
    assert message_events(engine) == [b"hello", b"again"]
    engine.feed(serialize_frame(BINARY, final + b"\x00", rsv1=True, mask=MASK))
    assert engine.events_received()[0][:2] == ("protocol_error", 1007)


@pytest.mark.parametrize("frames", [
    serialize_frame(TEXT, b"a", fin=False, mask=MASK) + serialize_frame(CONT, b"b", rsv1=True, mask=MASK),
    serialize_frame(PING, b"", rsv1=True, mask=MASK),
    serialize_frame(CLOSE, b"\x03\xe8", rsv1=True, mask=MASK),
], ids=["rsv1-on-continuation", "rsv1-on-ping", "rsv1-on-close"])
def test_rsv1_only_on_first_data_frame(frames: bytes) -> None:
    engine = server_with()
    engine.feed(frames)
    assert engine.events_received()[-1][:2] == ("protocol_error", 1002)


def test_uncompressed_messages_still_pass_and_control_frames_stay_plain() -> None:
    engine = server_with()
    engine.feed(serialize_frame(TEXT, b"plain", mask=MASK) + serialize_frame(PING, b"p", mask=MASK))
    assert engine.events_received() == [("message", "plain"), ("ping", b"p")]
    assert engine.data_to_send() == b"\x8a\x01p"        # the pong: no RSV1
    engine.ping(b"x" * 100)
    engine.close(1000, "bye " * 20)
    wire = engine.data_to_send()
    assert wire[0] == 0x89 and wire[102] == 0x88


# --------------------------------------------------------------------------- publish

def subscriber(**kw: Any) -> FrameEngine:
    engine = FrameEngine()
    if kw.pop("deflate", True):
        engine.enable_deflate(**kw)
    return engine


def decode_as_client(wire: bytes, **kw: Any) -> list[str | bytes]:
    client = FrameEngine(client=True)
    client.enable_deflate(**kw)
    client.feed(wire)
    return message_events(client)


def test_publish_compresses_once_per_group() -> None:
    text = json_text(4096)
    group_a = [subscriber() for _ in range(3)]                       # defaults
    group_b = [subscriber(compression_level=1) for _ in range(2)]   # another compressor
    plain = [subscriber(deflate=False)]
    own = [subscriber(local_no_context_takeover=False)]              # keeps its context
    small = [subscriber(compress_threshold=10_000)]                  # over its threshold
    everyone = tuple(group_a + group_b + plain + own + small)
    assert publish(everyone, text) == len(everyone)
    out = {id(e): e.data_to_send() for e in everyone}
    a = {out[id(e)] for e in group_a}
    b = {out[id(e)] for e in group_b}
    assert len(a) == 1 and len(b) == 1 and a != b                   # the same bytes per group
    assert next(iter(a))[0] == 0xC1 and len(next(iter(a))) < 2000
    assert out[id(plain[0])][0] == 0x81 and out[id(small[0])][0] == 0x81
    assert out[id(own[0])][0] == 0xC1
    for e in everyone:
        assert decode_as_client(out[id(e)], remote_no_context_takeover=False) == [text]


def test_publish_compress_false_and_exclude() -> None:
    subs = (subscriber(), subscriber())
    assert publish(subs, "a" * 500, subs[0], compress=False) == 1
    assert subs[0].data_to_send() == b""
    assert subs[1].data_to_send()[0] == 0x81
    assert publish(subs, "a" * 50, None, compress=True) == 2
    assert subs[0].data_to_send()[0] == 0xC1


def test_publish_with_context_takeover_stays_in_step() -> None:
    sub = subscriber(local_no_context_takeover=False, compress_threshold=0)
    client = FrameEngine(client=True)
    client.enable_deflate(remote_no_context_takeover=False)
    for i in range(5):
        publish((sub,), json_text(1000 + i))
        sub.send(json_text(900 + i))
    client.feed(sub.data_to_send())
    got = message_events(client)
    assert got == [json_text(n) for i in range(5) for n in (1000 + i, 900 + i)]


# --------------------------------------------------------------------------- memory

def test_no_zlib_state_is_kept_between_messages_by_default() -> None:
    engine = server_with()
    compression = engine.compression
    assert compression is not None
    engine.feed(serialize_frame(TEXT, deflated(b"hello"), rsv1=True, mask=MASK))
    assert message_events(engine) == ["hello"]
    assert not compression.has_inflater and not compression.has_own_deflater
    assert _deflate.inflater_pool_size() >= 1          # given back for the next message
    engine.send("x" * 1000)
    assert not compression.has_own_deflater            # the shared compressor did it
    # Mid-message the inflater is held, and freed if the connection goes away.
    engine.feed(serialize_frame(TEXT, deflated(b"part"), fin=False, rsv1=True, mask=MASK))
    assert compression.has_inflater
    engine.detach()
    assert not compression.has_inflater and engine.compression is None


def test_context_takeover_keeps_state_per_connection() -> None:
    engine = server_with(local_no_context_takeover=False, remote_no_context_takeover=False,
                         remote_max_window_bits=10)
    compression = engine.compression
    assert compression is not None
    engine.feed(serialize_frame(TEXT, deflated(b"hello", 10), rsv1=True, mask=MASK))
    engine.send("x" * 1000)
    assert compression.has_inflater and compression.has_own_deflater
    engine.detach()
    assert not compression.has_inflater and not compression.has_own_deflater


def test_enable_deflate_validates() -> None:
    with pytest.raises(ValueError):
        FrameEngine().enable_deflate(local_max_window_bits=16)
    with pytest.raises(ValueError):
        FrameEngine().enable_deflate(memory_level=0)
    assert _deflate.Deflater(10).compress_message(b"abc" * 100)
    assert _deflate.zlib_version()


def test_empty_compressed_payload_is_an_empty_message_and_keeps_the_context() -> None:
    engine = server_with(remote_no_context_takeover=False)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = c.compress(b"context " * 10) + c.flush(zlib.Z_SYNC_FLUSH)
    second = c.compress(b"context " * 10) + c.flush(zlib.Z_SYNC_FLUSH)   # refers to the first
    engine.feed(serialize_frame(TEXT, first[:-4], rsv1=True, mask=MASK))
    engine.feed(serialize_frame(TEXT, b"", rsv1=True, mask=MASK))
    engine.feed(serialize_frame(TEXT, b"\x00", rsv1=True, mask=MASK))      # RFC 7692 7.2.3.6
    engine.feed(serialize_frame(TEXT, second[:-4], rsv1=True, mask=MASK))
    assert message_events(engine) == ["context " * 10, "", "", "context " * 10]


def test_publish_serialized_compresses_a_plain_frame_for_deflate_subscribers() -> None:
    from harpia._publish import publish_serialized
    text = json_text(3000)
    subs = (subscriber(), subscriber(deflate=False))
    frame = serialize_frame(TEXT, text)                 # as the Redis backplane hands it over
    assert publish_serialized(subs, frame) == 2
    compressed, plain = (e.data_to_send() for e in subs)
    assert compressed[0] == 0xC1 and plain == frame
    assert decode_as_client(compressed) == [text]
    # Anything but one whole text/binary frame is copied as it is.
    odd = serialize_frame(TEXT, text, fin=False)
    assert publish_serialized(subs, odd) == 2
    assert [e.data_to_send() for e in subs] == [odd, odd]
