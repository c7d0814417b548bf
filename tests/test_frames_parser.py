"""The parser against every framing rule of RFC 6455 sections 5 and 7.

Each rule is one row of ``CASES``: input bytes, engine options, the events and the output
expected.  Every row runs three ways: the whole input in one ``feed``, one byte per
``feed``, and cut at random points (hypothesis), since a rule that only holds when a
header arrives in one read is not a rule.  A few properties that are about *when*
something happens (fail-fast UTF-8, limits decided from the header) have their own tests
below the table.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from frame_builder import (BINARY, CLOSE, CONT, PING, PONG, TEXT, cf, close_code_sent,
                                 close_payload, describe_output, draw_splits, every_byte, feed_in_pieces,
                                 normalize, run, sf)

from harpia._frames import CLOSED, CLOSING, OPEN, FrameEngine


@dataclass
class Case:
    id: str
    data: bytes
    events: list[tuple[Any, ...]]
    output: list[tuple[Any, ...]] = field(default_factory=list)
    kw: dict[str, Any] = field(default_factory=dict)
    ready_state: int | None = None

    def __post_init__(self) -> None:
        if self.ready_state is None:
            ends = [e[0] for e in self.events if e[0] in ("close", "protocol_error")]
            self.ready_state = CLOSED if ends == ["close"] else CLOSING if ends else OPEN


def err(code: int) -> list[tuple[Any, ...]]:
    return [("protocol_error", code)]


def fails(id: str, data: bytes, code: int, before: list[tuple[Any, ...]] | None = None,
          output_before: list[tuple[Any, ...]] | None = None, **kw: Any) -> Case:
    """A row where the connection fails with ``code`` (and says so in a close frame)."""
    return Case(id, data, (before or []) + err(code),
                (output_before or []) + [("close", code, "*")], kw)


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]

def deflated(data: bytes) -> bytes:
    """``data`` as a permessage-deflate message payload (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


DEFLATED_ZZY = deflated(b"zzy")
BIG = bytes(range(256)) * 257          # 65792 bytes: a 64-bit length
SIZES = [0, 1, 125, 126, 127, 65535, 65536]

CASES: list[Case] = [
    # --- messages, both types, every length encoding -----------------------------------
    Case("text", cf(TEXT, "héllo wörld €𝄞"), [("message", "héllo wörld €𝄞")]),
    Case("binary", cf(BINARY, b"\x00\xff\x80"), [("message", b"\x00\xff\x80")]),
    Case("empty-text", cf(TEXT, ""), [("message", "")]),
    Case("empty-binary", cf(BINARY, b""), [("message", b"")]),
    *[Case(f"binary-{n}", cf(BINARY, BIG[:n]), [("message", BIG[:n])]) for n in SIZES],
    *[Case(f"text-{n}", cf(TEXT, "é" * (n // 2) + "a" * (n % 2)),
           [("message", "é" * (n // 2) + "a" * (n % 2))]) for n in SIZES],
    Case("text-600-general-path", cf(TEXT, "x€" * 150), [("message", "x€" * 150)]),
    Case("two-pipelined", cf(TEXT, "a") + cf(BINARY, b"b"), [("message", "a"), ("message", b"b")]),
    Case("client-role-text", sf(TEXT, "hi"), [("message", "hi")], kw={"client": True}),
    Case("client-role-big", sf(BINARY, BIG), [("message", BIG)], kw={"client": True}),
    Case("mask-key-zero", cf(BINARY, b"abc", mask=b"\0\0\0\0"), [("message", b"abc")]),

    # --- fragmentation ------------------------------------------------------------------
    Case("fragmented-text", cf(TEXT, "ab", fin=False) + cf(CONT, "c", fin=False) + cf(CONT, "d"),
         [("message", "abcd")]),
    Case("fragmented-binary-empty-pieces",
         cf(BINARY, b"", fin=False) + cf(CONT, b"x", fin=False) + cf(CONT, b""),
         [("message", b"x")]),
    Case("fragmented-big", cf(BINARY, BIG[:70000], fin=False) + cf(CONT, BIG[:200]),
         [("message", BIG[:70000] + BIG[:200])]),
    Case("ping-between-fragments",
         cf(TEXT, "a", fin=False) + cf(PING, b"p1") + cf(PONG, b"q") + cf(CONT, "b"),
         [("ping", b"p1"), ("pong", b"q"), ("message", "ab")], [("pong", b"p1")]),
    Case("close-between-fragments",
         cf(TEXT, "a", fin=False) + cf(CLOSE, close_payload(1000)) + cf(CONT, "b"),
         [("close", 1000, "")], [("close", 1000, "")]),
    fails("continuation-without-message", cf(CONT, "x"), 1002),
    fails("continuation-after-complete-message", cf(TEXT, "a") + cf(CONT, "x"), 1002,
          [("message", "a")]),
    fails("text-inside-fragmented-text", cf(TEXT, "a", fin=False) + cf(TEXT, "b"), 1002),
    fails("binary-inside-fragmented-text", cf(TEXT, "a", fin=False) + cf(BINARY, b"b"), 1002),
    fails("text-inside-fragmented-binary-after-ping",
          cf(BINARY, b"a", fin=False) + cf(PING) + cf(TEXT, "b"), 1002,
          [("ping", b"")], [("pong", b"")]),

    # --- header fields ------------------------------------------------------------------
    *[fails(f"reserved-opcode-{op}", cf(op, b"x"), 1002) for op in (3, 4, 5, 6, 7)],
    *[fails(f"reserved-control-opcode-{op}", cf(op, b""), 1002) for op in (11, 12, 13, 14, 15)],
    *[fails(f"rsv-{rsv}-without-extension", cf(BINARY, b"x", rsv=rsv), 1002)
      for rsv in (1, 2, 3, 4, 5, 6, 7)],
    fails("rsv1-on-ping-without-extension", cf(PING, b"", rsv=4), 1002),
    Case("rsv1-first-frame-with-extension",
         cf(BINARY, DEFLATED_ZZY[:3], rsv=4, fin=False) + cf(CONT, DEFLATED_ZZY[3:]),
         [("message", b"zzy")], kw={"rsv1": True}),
    fails("rsv1-on-continuation", cf(BINARY, b"z", fin=False, rsv=4) + cf(CONT, b"y", rsv=4),
          1002, rsv1=True),
    fails("rsv1-on-control", cf(PING, b"", rsv=4), 1002, rsv1=True),
    fails("rsv2-with-rsv1-enabled", cf(BINARY, b"x", rsv=2), 1002, rsv1=True),
    fails("rsv3-with-rsv1-enabled", cf(BINARY, b"x", rsv=1), 1002, rsv1=True),
    fails("unmasked-client-frame", sf(TEXT, "x"), 1002),
    fails("unmasked-client-ping", sf(PING, b""), 1002),
    fails("masked-server-frame", cf(TEXT, "x"), 1002, client=True),
    fails("masked-server-close", cf(CLOSE, close_payload(1000)), 1002, client=True),

    # --- lengths ------------------------------------------------------------------------
    Case("len-126-in-16-bits", cf(BINARY, BIG[:126], ext=16), [("message", BIG[:126])]),
    Case("len-65535-in-16-bits", cf(BINARY, BIG[:65535], ext=16), [("message", BIG[:65535])]),
    Case("len-65536-in-64-bits", cf(BINARY, BIG[:65536], ext=64), [("message", BIG[:65536])]),
    fails("len-125-in-16-bits", cf(BINARY, BIG[:125], ext=16), 1002),
    fails("len-0-in-16-bits", cf(TEXT, b"", ext=16), 1002),
    fails("len-65535-in-64-bits", cf(BINARY, BIG[:65535], ext=64), 1002),
    fails("len-1-in-64-bits", cf(BINARY, b"x", ext=64), 1002),
    fails("len-64-bit-msb", cf(BINARY, b"", ext=64, length=1 << 63), 1002),
    fails("len-64-bit-all-ones", cf(BINARY, b"", ext=64, length=(1 << 64) - 1), 1002),
    fails("len-16-bit-client-role-non-minimal", sf(BINARY, b"x", ext=16), 1002, client=True),

    # --- control frames -----------------------------------------------------------------
    Case("ping-pong", cf(PING, b"hello"), [("ping", b"hello")], [("pong", b"hello")]),
    Case("ping-empty", cf(PING), [("ping", b"")], [("pong", b"")]),
    Case("ping-125", cf(PING, BIG[:125]), [("ping", BIG[:125])], [("pong", BIG[:125])]),
    Case("ping-client-role", sf(PING, b"x"), [("ping", b"x")], [("pong", b"x")],
         kw={"client": True}),
    Case("pong-received", cf(PONG, b"y"), [("pong", b"y")]),
    Case("two-pings", cf(PING, b"1") + cf(PING, b"2"), [("ping", b"1"), ("ping", b"2")],
         [("pong", b"1"), ("pong", b"2")]),
    fails("ping-126", cf(PING, BIG[:126]), 1002),
    fails("close-126", cf(CLOSE, close_payload(1000, b"r" * 124)), 1002),
    fails("pong-64-bit-length", cf(PONG, BIG[:70000]), 1002),
    fails("fragmented-ping", cf(PING, b"", fin=False), 1002),
    fails("fragmented-close", cf(CLOSE, close_payload(1000), fin=False), 1002),
    fails("fragmented-pong-between-fragments", cf(TEXT, "a", fin=False) + cf(PONG, fin=False),
          1002),

    # --- close frames -------------------------------------------------------------------
    Case("close-1000-with-reason", cf(CLOSE, close_payload(1000, "bye ☃")),
         [("close", 1000, "bye ☃")], [("close", 1000, "")]),
    Case("close-empty-is-1005", cf(CLOSE), [("close", 1005, "")], [("close",)]),
    Case("close-123-byte-reason", cf(CLOSE, close_payload(4000, "€" * 41)),
         [("close", 4000, "€" * 41)], [("close", 4000, "")]),
    Case("close-client-role", sf(CLOSE, close_payload(1001)), [("close", 1001, "")],
         [("close", 1001, "")], kw={"client": True}),
    *[Case(f"close-valid-{c}", cf(CLOSE, close_payload(c)), [("close", c, "")],
           [("close", c, "")]) for c in VALID_CLOSE_CODES],
    *[fails(f"close-invalid-{c}", cf(CLOSE, close_payload(c)), 1002) for c in INVALID_CLOSE_CODES],
    fails("close-1-byte", cf(CLOSE, b"\x03"), 1002),
    fails("close-reason-not-utf8", cf(CLOSE, close_payload(1000, b"\xff")), 1007),
    fails("close-reason-truncated-utf8", cf(CLOSE, close_payload(1000, "é".encode()[:1])), 1007),
    fails("close-reason-surrogate", cf(CLOSE, close_payload(1000, b"\xed\xa0\x80")), 1007),
    Case("after-close-nothing-is-parsed",
         cf(CLOSE, close_payload(1000)) + cf(TEXT, "late") + cf(PING, b"p") + b"\xff\xff\xff",
         [("close", 1000, "")], [("close", 1000, "")]),
    Case("after-protocol-error-nothing-is-parsed",
         cf(3, b"") + cf(TEXT, "late") + cf(PING, b"p") + cf(CLOSE, close_payload(1000)),
         err(1002), [("close", 1002, "*")]),

    # --- UTF-8 --------------------------------------------------------------------------
    fails("text-invalid-byte", cf(TEXT, b"ab\xffcd"), 1007),
    fails("text-lone-continuation", cf(TEXT, b"\x80"), 1007),
    fails("text-overlong-2", cf(TEXT, b"\xc0\xaf"), 1007),
    fails("text-overlong-3", cf(TEXT, b"\xe0\x80\xaf"), 1007),
    fails("text-overlong-4", cf(TEXT, b"\xf0\x80\x80\xaf"), 1007),
    fails("text-surrogate", cf(TEXT, b"\xed\xa0\x80"), 1007),
    fails("text-above-u10ffff", cf(TEXT, b"\xf4\x90\x80\x80"), 1007),
    fails("text-truncated-at-end", cf(TEXT, "€".encode()[:2]), 1007),
    fails("text-invalid-after-600-valid-bytes", cf(TEXT, b"a" * 600 + b"\xfe"), 1007),
    fails("text-invalid-client-role", sf(TEXT, b"\xff"), 1007, client=True),
    Case("text-u10ffff", cf(TEXT, "\U0010ffff"), [("message", "\U0010ffff")]),
    Case("text-code-point-split-over-fragments",
         cf(TEXT, "a".encode() + "𝄞".encode()[:1], fin=False)
         + cf(CONT, "𝄞".encode()[1:3], fin=False) + cf(CONT, "𝄞".encode()[3:] + b"z"),
         [("message", "a𝄞z")]),
    Case("text-code-point-split-around-a-ping",
         cf(TEXT, "€".encode()[:1], fin=False) + cf(PING, b"") + cf(CONT, "€".encode()[1:]),
         [("ping", b""), ("message", "€")], [("pong", b"")]),
    fails("text-split-code-point-bad-continuation",
          cf(TEXT, "€".encode()[:2], fin=False) + cf(CONT, b"a"), 1007),
    fails("text-split-code-point-truncated-at-message-end",
          cf(TEXT, b"ok", fin=False) + cf(CONT, "€".encode()[:2]), 1007),
    fails("text-split-surrogate", cf(TEXT, b"\xed", fin=False) + cf(CONT, b"\xa0\x80"), 1007),
    Case("binary-is-not-utf8-checked", cf(BINARY, b"\xff\xfe"), [("message", b"\xff\xfe")]),

    # --- limits -------------------------------------------------------------------------
    Case("at-max-payload-length", cf(BINARY, b"x" * 100), [("message", b"x" * 100)],
         kw={"max_payload_length": 100}),
    fails("over-max-payload-length", cf(BINARY, b"x" * 101), 1009, max_payload_length=100),
    fails("over-max-payload-length-text", cf(TEXT, "x" * 101), 1009, max_payload_length=100),
    fails("over-max-payload-length-16-bit", cf(BINARY, BIG[:300]), 1009, max_payload_length=200),
    fails("over-max-payload-length-cumulative",
          cf(TEXT, "x" * 60, fin=False) + cf(CONT, "y" * 41), 1009, max_payload_length=100),
    Case("at-max-payload-length-cumulative",
         cf(TEXT, "x" * 60, fin=False) + cf(CONT, "y" * 40),
         [("message", "x" * 60 + "y" * 40)], kw={"max_payload_length": 100}),
    Case("control-frames-do-not-count", cf(PING, b"p" * 50), [("ping", b"p" * 50)],
         [("pong", b"p" * 50)], kw={"max_payload_length": 10}),
    fails("max-payload-length-zero", cf(BINARY, b"x"), 1009, max_payload_length=0),
]


def check(case: Case, splits: list[int]) -> None:
    kw = dict(case.kw)
    rsv1 = kw.pop("rsv1", False)
    engine = FrameEngine(**kw)
    if rsv1:
        engine.enable_deflate()               # the extension that gives RSV1 a meaning
    feed_in_pieces(engine, case.data, splits)
    events = normalize(engine.events_received())
    assert events == case.events
    described = describe_output(engine.data_to_send(), masked=engine.client)
    # ("close", code, "*"): the close reason of a protocol error is free text.
    assert len(described) == len(case.output), (described, case.output)
    for got, want in zip(described, case.output):
        assert got[:2] == want[:2] if want[-1] == "*" else got == want, (described, case.output)
    assert engine.ready_state == case.ready_state


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_whole(case: Case) -> None:
    check(case, [])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_byte_by_byte(case: Case) -> None:
    check(case, every_byte(case.data))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@given(draw=st.data())
@settings(max_examples=15, deadline=None)
def test_rule_random_splits(case: Case, draw: st.DataObject) -> None:
    check(case, draw_splits(draw, len(case.data)))


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- timing rules

@pytest.mark.parametrize("bad, valid_prefix", [
    (b"\xff", b"hello "), (b"\x80", b""), (b"\xc0", b"a"), (b"\xa0", b"\xed"),
    (b"\x90", b"\xf4"), (b"\x80", b"\xe0"), (b"a", "€".encode()[:2]),
])
@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("fragmented", [False, True])
@given(draw=st.data())
@settings(max_examples=10, deadline=None)
def test_invalid_utf8_fails_as_soon_as_the_bad_byte_arrives(
        bad: bytes, valid_prefix: bytes, client: bool, fragmented: bool,
        draw: st.DataObject) -> None:
    payload = valid_prefix + bad + b"rest of the frame, never needed" * 20
    build = sf if client else cf
    head = build(TEXT, b"ok", fin=False) if fragmented else b""
    frame = build(CONT if fragmented else TEXT, payload)
    header_len = len(frame) - len(payload)
    upto = len(head) + header_len + len(valid_prefix) + len(bad)
    data = head + frame
    engine = FrameEngine(client=client)
    feed_in_pieces(engine, data[:upto], draw_splits(draw, upto))
    assert normalize(engine.events_received()) == err(1007)
    assert close_code_sent(engine.data_to_send()) == 1007
    engine.feed(data[upto:])
    assert engine.events_received() == []
    assert engine.data_to_send() == b""


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("announced", [101, 126, 65536, 1 << 40, (1 << 63) - 1])
def test_max_payload_length_is_decided_from_the_header(client: bool, announced: int) -> None:
    build = sf if client else cf
    header = build(BINARY, b"", length=announced,
                   ext=7 if announced <= 125 else 16 if announced <= 65535 else 64)
    for splits in ([], every_byte(header)):
        engine = FrameEngine(client=client, max_payload_length=100)
        feed_in_pieces(engine, header, splits)       # not one payload byte
        assert normalize(engine.events_received()) == err(1009)
        assert close_code_sent(engine.data_to_send()) == 1009


def test_cumulative_max_payload_length_is_decided_from_the_second_header() -> None:
    engine = FrameEngine(max_payload_length=1000)
    engine.feed(cf(BINARY, b"x" * 600, fin=False))
    engine.feed(cf(CONT, b"", length=401)[:8])       # header only
    assert normalize(engine.events_received()) == err(1009)
    assert close_code_sent(engine.data_to_send()) == 1009


def test_a_big_announced_length_allocates_nothing_up_front() -> None:
    # 1 TiB announced under a large limit: the engine must wait for bytes, not allocate.
    engine = FrameEngine(max_payload_length=(1 << 62))
    engine.feed(cf(BINARY, b"", length=1 << 40, ext=64))
    engine.feed(b"\x00" * 1000)
    assert engine.events_received() == []
    assert engine.ready_state == OPEN


def test_no_event_before_the_frame_is_complete() -> None:
    data = cf(TEXT, "hello") + cf(PING, b"x")
    engine = FrameEngine()
    engine.feed(data[:-1])
    assert engine.events_received() == [("message", "hello")]
    assert engine.data_to_send() == b""
    engine.feed(data[-1:])
    assert engine.events_received() == [("ping", b"x")]


# --------------------------------------------------------------------------- closing state

def test_received_close_is_echoed_and_recorded() -> None:
    events, output, engine = run(cf(CLOSE, close_payload(3001, "done")))
    assert events == [("close", 3001, "done")]
    assert output == [("close", 3001, "")]
    assert engine.ready_state == CLOSED
    assert engine.close_code_received == 3001
    assert engine.close_reason_received == "done"
    assert engine.close_code_sent == 3001
    assert engine.is_input_closed


def test_empty_close_is_echoed_empty() -> None:
    events, output, engine = run(cf(CLOSE))
    assert output == [("close",)]
    assert engine.close_code_received == 1005
    assert engine.close_code_sent == 1005
    assert engine.ready_state == CLOSED


def test_close_reply_after_our_close_is_not_echoed() -> None:
    engine = FrameEngine()
    engine.close(4001, "bye")
    assert engine.ready_state == CLOSING
    assert close_code_sent(engine.data_to_send()) == 4001
    engine.feed(cf(CLOSE, close_payload(4001)))
    assert engine.events_received() == [("close", 4001, "")]
    assert engine.data_to_send() == b""
    assert engine.ready_state == CLOSED


def test_ping_while_closing_is_reported_but_not_answered() -> None:
    engine = FrameEngine()
    engine.close()
    engine.data_to_send()
    engine.feed(cf(PING, b"x"))
    assert engine.events_received() == [("ping", b"x")]
    assert engine.data_to_send() == b""


def test_protocol_error_state() -> None:
    events, output, engine = run(cf(TEXT, b"\xff"))
    assert engine.close_code_sent == 1007
    assert engine.ready_state == CLOSING
    assert engine.is_input_closed
    engine.feed(cf(TEXT, "more"))
    assert engine.events_received() == []


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data = cf(TEXT, "a") + cf(BINARY, b"b" * 300, fin=False) + cf(CONT, b"c")
    for wrap in (bytearray, memoryview, lambda d: memoryview(bytearray(d))):
        engine = FrameEngine()
        feed_in_pieces(engine, wrap(data), [3, 7, 100])  # type: ignore[arg-type]
        assert engine.events_received() == [("message", "a"), ("message", b"b" * 300 + b"c")]


def test_mask_key_is_kept_across_reads() -> None:
    # The key phase must carry over between pieces of one payload.
    payload = bytes(range(256)) * 4
    data = cf(BINARY, payload, mask=b"\x01\x82\x43\xc4")
    for cut in range(14, 24):
        engine = FrameEngine()
        feed_in_pieces(engine, data, [cut, cut + 1, cut + 3, cut + 6, cut + 500])
        assert engine.events_received() == [("message", payload)]


def test_no_memory_is_leaked_on_any_path() -> None:
    import gc
    import tracemalloc

    server_input = (cf(TEXT, "small") + cf(BINARY, b"b" * 40) + cf(TEXT, "é" * 400)
                    + cf(BINARY, BIG[:70000]) + cf(TEXT, "ab", fin=False) + cf(PING, b"p")
                    + cf(CONT, "c" * 5000) + cf(BINARY, b"", fin=False) + cf(CONT, b"z"))
    client_input = sf(TEXT, "é" * 400) + sf(BINARY, BIG[:3000], fin=False) + sf(CONT, b"")

    def once() -> None:
        for data, client in ((server_input, False), (client_input, True)):
            engine = FrameEngine(client=client)
            feed_in_pieces(engine, data, [5, 100, 3000, 3001, 60000])
            engine.send("reply" * 100)
            engine.data_to_send()
            assert len(engine.events_received()) >= 2
        failing = FrameEngine()
        failing.feed(cf(TEXT, "ok", fin=False) + cf(CONT, b"x" * 300 + b"\xff"))
        half = FrameEngine()
        half.feed(cf(BINARY, BIG[:70000])[:30000])         # dropped mid-message

    for _ in range(20):
        once()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            once()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes still allocated after 300 rounds"
