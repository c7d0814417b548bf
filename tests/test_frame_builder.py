"""Tests of the frame builder and decoder the engine tests rely on (``frame_builder``)."""
from __future__ import annotations

import codecs

import pytest
from frame_builder import (BINARY, CLOSE, CONT, PING, TEXT, build_frame, cf, close_code_sent,
                           close_payload, decode_frames, draw_splits, feed_in_pieces, sf,
                           utf8_valid_prefix)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_build_frame_matches_rfc_examples() -> None:
    # RFC 6455 section 5.7.
    assert build_frame(TEXT, b"Hello") == b"\x81\x05\x48\x65\x6c\x6c\x6f"
    assert build_frame(TEXT, b"Hello", mask=b"\x37\xfa\x21\x3d") == \
        b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert build_frame(TEXT, b"Hel", fin=False) == b"\x01\x03\x48\x65\x6c"
    assert build_frame(CONT, b"lo") == b"\x80\x02\x6c\x6f"
    assert build_frame(PING, b"Hello") == b"\x89\x05\x48\x65\x6c\x6c\x6f"
    assert build_frame(BINARY, bytes(256))[:4] == b"\x82\x7e\x01\x00"
    assert build_frame(BINARY, bytes(65536))[:10] == b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"


def test_decode_frames_inverts_build_frame() -> None:
    data = cf(TEXT, "a", fin=False) + cf(PING, b"p") + cf(CONT, "b") + sf(CLOSE, close_payload(1000))
    assert [(f.opcode, f.fin, f.masked, f.payload) for f in decode_frames(data)] == [
        (TEXT, False, True, b"a"), (PING, True, True, b"p"), (CONT, True, True, b"b"),
        (CLOSE, True, False, b"\x03\xe8")]
    assert close_code_sent(data) == 1000


@given(st.binary(max_size=40), st.data())
@settings(max_examples=50, deadline=None)
def test_feed_in_pieces_passes_every_byte_once(data: bytes, draw: st.DataObject) -> None:
    seen = bytearray()

    class Recorder:
        def feed(self, piece: bytes) -> None:
            seen.extend(piece)

    feed_in_pieces(Recorder(), data, draw_splits(draw, len(data)))  # type: ignore[arg-type]
    assert bytes(seen) == data


@given(st.binary(max_size=8))
@settings(max_examples=300, deadline=None)
def test_utf8_valid_prefix_oracle(data: bytes) -> None:
    # Cross-check with CPython's incremental decoder, which agrees except that it accepts
    # ED A0..BF (the start of a surrogate) as a prefix and only fails at the third byte.
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(data, final=False)
        python_says = True
    except UnicodeDecodeError:
        python_says = False
    ours = utf8_valid_prefix(data)
    if b"\xed" in data and python_says and not ours:
        return
    assert ours == python_says


@pytest.mark.parametrize("data, expected", [
    (b"", True), (b"\xe0", True), (b"\xe0\x80", False), (b"\xed\xa0", False),
    (b"\xed\x9f", True), (b"\xf4\x8f\xbf", True), (b"\xf4\x90", False), (b"\xc0", False),
    (b"\x80", False), (b"a\xf0\x9f\x98", True), (b"\xf5", False),
])
def test_utf8_valid_prefix_examples(data: bytes, expected: bool) -> None:
    assert utf8_valid_prefix(data) is expected
