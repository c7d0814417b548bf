"""In-process micro benchmarks of the frame engine against websockets and wsproto.

The same inputs go through harpia, websockets' frame parser (``Frame.parse`` driven by its
``StreamReader``, with its C ``apply_mask``) and wsproto's ``FrameProtocol``; each case is
one benchmark group, so the table compares the three side by side.  Every implementation
produces each message as a ``bytes`` object, and every benchmark checks what it produced.

    taskset -c 1 python -m pytest benchmarks/test_micro.py --benchmark-only

Cases: parsing a stream of 10,000 masked 32-byte binary frames (server side); parsing one
64 KiB and one 1 MiB masked frame; unmasking 32 B and 1 MiB; serializing 10,000 32-byte
server frames.
"""
from __future__ import annotations

import operator
import os
from collections.abc import Callable
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.speedups import apply_mask as ws_apply_mask
from websockets.streams import StreamReader
from wsproto.frame_protocol import FrameProtocol

from harpia._frames import FrameEngine, apply_mask, serialize_frame, unmask_inplace

N_SMALL = 10_000
KEY = b"\x8c\x1f\x42\xe7"
MIB = 1 << 20

pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=3)


def masked_frame(payload: bytes) -> bytes:
    return serialize_frame(2, payload, mask=KEY)


SMALL_PAYLOADS = [os.urandom(32) for _ in range(N_SMALL)]
SMALL_STREAM = b"".join(masked_frame(p) for p in SMALL_PAYLOADS)
BIG_PAYLOADS = {"64KiB": os.urandom(64 * 1024), "1MiB": os.urandom(MIB)}
BIG_FRAMES = {name: masked_frame(p) for name, p in BIG_PAYLOADS.items()}


# --------------------------------------------------------------------------- parsers

def harpia_parse(stream: bytes) -> Callable[[], list[bytes]]:
    """One ``feed`` of the whole stream into a long-lived server engine whose bound handler
    is a Python ``def on_message(ws, message)`` appending to a list: what an application
    has, and the same output as the two others (a list of bytes)."""
    out: list[bytes] = []

    def on_message(ws: FrameEngine, message: bytes) -> None:
        out.append(message)

    engine = FrameEngine()
    engine.bind_message_handler(on_message, 2)

    def run() -> list[bytes]:
        out.clear()
        engine.feed(stream)
        return out

    return run


def harpia_parse_c_sink(stream: bytes) -> Callable[[], list[bytes]]:
    """The engine alone: the handler is ``operator.is_``, a C function taking two arguments
    through vectorcall, so each message is built as bytes, handed over and dropped."""
    engine = FrameEngine()
    engine.bind_message_handler(operator.is_, 2)

    def run() -> list[bytes]:
        engine.feed(stream)
        return []

    return run


def websockets_parse(stream: bytes) -> Callable[[], list[bytes]]:
    """What ``websockets.protocol.Protocol.parse`` does per frame: one ``Frame.parse``
    generator over the reader, completed by a single ``send``."""

    def run() -> list[bytes]:
        reader = StreamReader()
        reader.feed_data(stream)
        out = []
        read_exact = reader.read_exact
        parse = Frame.parse
        while reader.buffer:
            gen = parse(read_exact, mask=True, max_size=None)
            try:
                gen.send(None)
            except StopIteration as done:
                out.append(done.value.data)
            else:
                raise AssertionError("incomplete frame")
        return out

    return run


def wsproto_parse(stream: bytes) -> Callable[[], list[bytes]]:
    def run() -> list[bytes]:
        proto = FrameProtocol(client=False, extensions=[])
        proto.receive_bytes(stream)
        return [frame.payload for frame in proto.received_frames()]

    return run


PARSERS = {
    "harpia": harpia_parse,
    "harpia-c-sink": harpia_parse_c_sink,
    "websockets": websockets_parse,
    "wsproto": wsproto_parse,
}


@pytest.mark.benchmark(group="parse 10,000 x 32 B masked frames")
@pytest.mark.parametrize("impl", list(PARSERS))
def test_parse_small_stream(benchmark: Any, impl: str) -> None:
    result = benchmark(PARSERS[impl](SMALL_STREAM))
    if impl == "harpia-c-sink":           # the sink keeps nothing: check the engine apart
        engine = FrameEngine()
        engine.feed(SMALL_STREAM)
        result = [m for _, m in engine.events_received()]
    assert result == SMALL_PAYLOADS
    assert all(type(m) is bytes for m in result)


@pytest.mark.parametrize("size", list(BIG_FRAMES))
@pytest.mark.parametrize("impl", ["harpia", "websockets", "wsproto"])
def test_parse_big_frame(benchmark: Any, impl: str, size: str) -> None:
    benchmark.group = f"parse one {size} masked frame"
    result = benchmark(PARSERS[impl](BIG_FRAMES[size]))
    assert result[-1] == BIG_PAYLOADS[size]


# --------------------------------------------------------------------------- masking

UNMASK_CASES = {"32B": os.urandom(32), "1MiB": os.urandom(MIB)}


@pytest.mark.parametrize("size", list(UNMASK_CASES))
@pytest.mark.parametrize("impl", ["harpia-inplace", "harpia", "websockets"])
def test_unmask(benchmark: Any, impl: str, size: str) -> None:
    benchmark.group = f"unmask {size}"
    data = UNMASK_CASES[size]
    if impl == "harpia-inplace":
        buf = bytearray(data)
        unmask_inplace(buf, KEY)
        assert buf == ws_apply_mask(data, KEY)
        benchmark(unmask_inplace, buf, KEY)          # XORs back and forth: the same work
    elif impl == "harpia":
        assert benchmark(apply_mask, data, KEY) == ws_apply_mask(data, KEY)
    else:
        assert benchmark(ws_apply_mask, data, KEY) == apply_mask(data, KEY)


# --------------------------------------------------------------------------- serializer

def harpia_serialize() -> bytes:
    engine = FrameEngine(backpressure_limit=1 << 30)
    send = engine.send
    for p in SMALL_PAYLOADS:
        send(p)
    return engine.data_to_send()


def harpia_serialize_frame() -> bytes:
    return b"".join([serialize_frame(2, p) for p in SMALL_PAYLOADS])


def websockets_serialize() -> bytes:
    return b"".join([Frame(Opcode.BINARY, p).serialize(mask=False) for p in SMALL_PAYLOADS])


def wsproto_serialize() -> bytes:
    proto = FrameProtocol(client=False, extensions=[])
    return b"".join([proto.send_data(p) for p in SMALL_PAYLOADS])


SERIALIZERS = {
    "harpia-send": harpia_serialize,
    "harpia-serialize_frame": harpia_serialize_frame,
    "websockets": websockets_serialize,
    "wsproto": wsproto_serialize,
}


@pytest.mark.benchmark(group="serialize 10,000 x 32 B server frames")
@pytest.mark.parametrize("impl", list(SERIALIZERS))
def test_serialize_small(benchmark: Any, impl: str) -> None:
    out = benchmark(SERIALIZERS[impl])
    assert out == b"".join(b"\x82\x20" + p for p in SMALL_PAYLOADS)
