"""The engine's read-into path (``get_buffer`` / ``buffer_updated``, asyncio.BufferedProtocol):
the same messages as ``feed`` whatever the read sizes, large frames read straight into the
message without outgrowing what arrived, and the shared receive area never aliasing
bytes an engine keeps."""
from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from frame_builder import BINARY, CONT, PING, TEXT, cf, normalize

from harpia._frames import FrameEngine
from harpia._loop import LoopContext

KiB = 1024


def transport_reads(engine: FrameEngine, data: bytes, sizes: list[int] | None = None,
                    rng: random.Random | None = None) -> list[int]:
    """What a transport does: ask for an area, read at most its length, report.  Read
    sizes come from ``sizes`` (cycled), else ``rng``, else fill each area; returns the
    length of every area offered."""
    offered: list[int] = []
    pos = 0
    i = 0
    while pos < len(data):
        area = engine.get_buffer(-1)
        room = len(area)
        assert room > 0
        offered.append(room)
        want = len(data) - pos
        if sizes:
            want = min(want, sizes[i % len(sizes)])
        elif rng is not None:
            want = min(want, rng.randint(1, 300 * KiB))
        n = min(room, want)
        area[:n] = data[pos:pos + n]
        engine.buffer_updated(n)
        pos += n
        i += 1
    return offered


def with_context(**kw: Any) -> tuple[FrameEngine, LoopContext]:
    context = LoopContext(lambda cb: None)
    engine = FrameEngine(**kw)
    engine.attach(lambda data: None, context)
    return engine, context


def sample_stream(rng: random.Random) -> tuple[bytes, list[tuple[Any, ...]]]:
    """Frames of every kind and size, and the events a correct engine reports for them."""
    big = bytes(rng.getrandbits(8) for _ in range(256)) * (1200 * KiB // 256)
    text = ("žluťoučký kůň 🐎 " * 20000)[:150_000]
    frames = [
        cf(TEXT, "small"),
        cf(BINARY, big),
        cf(PING, b"between"),
        cf(TEXT, text),
        cf(BINARY, big[:100 * KiB], fin=False),
        cf(PING, b"inside"),
        cf(CONT, big[100 * KiB:300 * KiB], fin=False),
        cf(CONT, big[300 * KiB:301 * KiB]),
        cf(BINARY, b""),
    ]
    events = [("message", "small"), ("message", big), ("ping", b"between"), ("message", text),
              ("ping", b"inside"), ("message", big[:301 * KiB]), ("message", b"")]
    return b"".join(frames), events


@pytest.mark.parametrize("reads", ["whole areas", "1 byte then whole", "random"])
def test_read_into_gives_the_messages_feed_gives(reads: str) -> None:
    rng = random.Random(7)
    data, expected = sample_stream(rng)
    engine, _ = with_context(max_payload_length=4 << 20)
    if reads == "whole areas":
        transport_reads(engine, data)
    elif reads == "1 byte then whole":
        transport_reads(engine, data, sizes=[1, 7, 1 << 30])
    else:
        transport_reads(engine, data, rng=rng)
    assert normalize(engine.events_received()) == expected


@settings(max_examples=40, deadline=None)
@given(length=st.integers(64 * KiB, 200 * KiB), seed=st.integers(0, 2**32),
       sizes=st.lists(st.integers(1, 128 * KiB), min_size=1, max_size=8))
def test_large_masked_frames_unmask_in_place_at_any_read_size(length: int, seed: int,
                                                              sizes: list[int]) -> None:
    payload = random.Random(seed).randbytes(length)
    engine, _ = with_context()
    transport_reads(engine, cf(BINARY, payload) + cf(BINARY, payload[::-1]), sizes=sizes)
    assert engine.events_received() == [("message", payload), ("message", payload[::-1])]


def test_a_large_frame_goes_straight_into_the_message() -> None:
    engine, context = with_context(max_payload_length=8 << 20)
    payload = bytes(range(256)) * (4 << 20 >> 8)
    offered = transport_reads(engine, cf(BINARY, payload))
    shared = len(context.receive_area())
    # The first read lands in the shared area; the rest in windows into the message that
    # at most double it each time: a handful of reads for 4 MiB, not 4 MiB / 256 KiB.
    assert offered[0] == shared
    assert len(offered) <= 6, offered
    arrived = 0
    for before, window in zip(offered, offered[1:]):
        arrived += before
        assert window <= max(64 * KiB, arrived), offered
    assert engine.events_received() == [("message", payload)]


def test_an_announced_length_does_not_reserve_memory() -> None:
    # A header promising 8 MiB followed by a trickle: every window stays within what
    # arrived (doubling), never the announced length.
    engine, _ = with_context(max_payload_length=16 << 20)
    frame = cf(BINARY, b"\x00" * (8 << 20))
    header_and_start = frame[:14 + 1000]
    offered = transport_reads(engine, header_and_start, sizes=[1 << 30])
    area = engine.get_buffer(-1)
    assert len(area) <= 64 * KiB
    offered = transport_reads(engine, frame[len(header_and_start):len(header_and_start) + 200 * KiB])
    arrived = 1000
    for window in offered:
        assert window <= max(64 * KiB, arrived), offered
        arrived += window
    assert engine.events_received() == []


def test_a_trickled_large_frame_grows_the_message_a_few_times_not_per_read() -> None:
    engine, _ = with_context()
    payload = bytes(range(256)) * (600 * KiB // 256)
    frame = cf(BINARY, payload)
    offered = transport_reads(engine, frame, sizes=[7])
    growths = sum(1 for a, b in zip(offered, offered[1:]) if b > a)
    assert growths <= 8, growths            # geometric growth, whatever the read size
    assert engine.events_received() == [("message", payload)]


def test_a_large_message_nobody_kept_lends_its_storage_to_the_next() -> None:
    # Its bytes object is reused (no allocator round trip per message, see _buffer): the
    # next message must not keep its hash, and one a handler kept must not be reused.
    engine, _ = with_context(max_payload_length=8 << 20)
    pattern = bytes(range(256)) * (1 << 12)
    payloads = [pattern[i:] + pattern[:i] for i in range(4)]      # 1 MiB each, all differ
    seen: list[tuple[int, bool, bool]] = []
    kept: list[bytes] = []

    def on_message(_: FrameEngine, message: bytes) -> None:
        seen.append((id(message), message == payloads[len(seen)],
                     hash(message) == hash(bytes(bytearray(message)))))
        if len(seen) == 3:
            kept.append(message)

    engine.bind_message_handler(on_message)
    for payload in payloads:
        transport_reads(engine, cf(BINARY, payload))
    assert [(equal, hashed) for _, equal, hashed in seen] == [(True, True)] * 4
    assert seen[1][0] == seen[0][0]         # the first, dropped, held the second
    assert kept == [payloads[2]]            # the third, kept, was left alone


def test_invalid_utf8_read_straight_into_a_text_message_fails_at_once() -> None:
    engine, _ = with_context()
    text = "a" * (300 * KiB)
    bad = bytearray(text.encode())
    bad[200 * KiB] = 0xFF
    frame = cf(TEXT, bytes(bad))
    transport_reads(engine, frame[:210 * KiB])      # the bad byte is in a direct window
    assert normalize(engine.events_received()) == [("protocol_error", 1007)]
    assert engine.get_buffer(-1)                      # still a valid area; input is ignored
    transport_reads(engine, frame[210 * KiB:])
    assert engine.events_received() == []


def test_bytes_held_while_delivery_is_paused_do_not_alias_the_shared_area() -> None:
    a, context = with_context()
    b = FrameEngine()
    b.attach(lambda data: None, context)
    a.pause_delivery()
    transport_reads(a, cf(TEXT, "for a, held") + cf(BINARY, b"A" * (100 * KiB)))
    # b reads into the same shared area and overwrites it
    transport_reads(b, cf(TEXT, "for b") + cf(BINARY, b"B" * (100 * KiB)))
    assert b.events_received() == [("message", "for b"), ("message", b"B" * (100 * KiB))]
    assert a.events_received() == []
    a.resume_delivery()
    assert a.events_received() == [("message", "for a, held"), ("message", b"A" * (100 * KiB))]


def test_engines_on_one_loop_context_share_one_area() -> None:
    a, context = with_context()
    b = FrameEngine()
    b.attach(lambda data: None, context)
    assert a.get_buffer(-1) is b.get_buffer(-1) is context.receive_area()


def test_an_engine_without_a_loop_context_reads_into_its_own_area() -> None:
    engine = FrameEngine()
    transport_reads(engine, cf(TEXT, "x" * 100) + cf(BINARY, b"y" * (300 * KiB)), sizes=[50_000])
    assert engine.events_received() == [("message", "x" * 100), ("message", b"y" * (300 * KiB))]


def test_output_is_flushed_after_each_read_into() -> None:
    writes: list[bytes] = []
    engine = FrameEngine()
    engine.attach(writes.append, LoopContext(lambda cb: None))
    engine.bind_message_handler(lambda ws, message: ws.send(message))
    transport_reads(engine, cf(TEXT, "one") + cf(TEXT, "two"))
    assert len(writes) == 1 and writes[0].endswith(b"two")
