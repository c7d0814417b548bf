"""Differential tests: harpia's parser against wsproto's, an independent implementation.

Hypothesis builds byte streams of frames, valid and invalid (reserved opcodes and bits,
every length encoding and its boundaries, masked or not, fragmented messages with control
frames in between, UTF-8 cut anywhere or corrupted, close frames with any code), feeds them
to ``wsproto.frame_protocol.FrameProtocol`` and to ``FrameEngine`` in the same role, and
requires the same sequence of events (messages, pings, pongs) and the same ending (a close
frame's code and reason, or the code of the protocol error).

Deliberate differences, applied to wsproto in ``Oracle`` and nowhere else:

* Close code 1014 ("Bad Gateway", IANA registry) is accepted by harpia; wsproto's
  ``CloseReason`` enum predates it and fails the connection with 1002.
* harpia rejects invalid UTF-8 at the first byte that cannot start or continue a valid
  sequence.  wsproto relies on CPython's incremental decoder, which is as strict except
  for surrogates: it takes ``ED A0`` as a valid prefix and only fails at the third byte, so
  a fragment ending in ``ED A0`` passes and the failure surfaces at a later frame -- or
  never, when a close frame or another protocol error comes first.  The strict oracle adds
  a prefix check after each frame (harpia must then agree exactly); the plain oracle is
  compared loosely: harpia's events must be a prefix of wsproto's and harpia's ending 1007.
* harpia judges a frame (opcode, RSV bits, mask bit, continuation sequencing) from its
  first two bytes; wsproto only once the extended length, or a payload byte, is in.  When
  a stream ends inside such a frame harpia has already failed and wsproto is still
  waiting: ``compare`` then requires wsproto to agree once the frame is padded complete.
"""
from __future__ import annotations

import random
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from frame_builder import (BINARY, CLOSE, CONT, PING, PONG, TEXT, build_frame,
                                 close_code_sent, decode_frames, draw_splits, feed_in_pieces,
                                 normalize, utf8_valid_prefix)
from wsproto.frame_protocol import (CloseReason, Frame, FrameProtocol, MessageDecoder, Opcode,
                                    ParseFailed)

from harpia._frames import FrameEngine

Event = tuple[Any, ...]


# --------------------------------------------------------------------------- the oracle

class _StrictUTF8Decoder(MessageDecoder):
    """wsproto's message decoder plus a check that a text message is still a valid UTF-8
    prefix after each frame (see the module docstring: CPython accepts ``ED A0``)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw = b""

    def process_frame(self, frame: Frame) -> Frame:
        starting = self.opcode is None
        out = super().process_frame(frame)      # sequencing errors first, as in harpia
        if out.opcode is Opcode.TEXT:
            assert isinstance(frame.payload, bytes)
            self.raw = (b"" if starting else self.raw) + frame.payload
            if not utf8_valid_prefix(self.raw):
                raise ParseFailed("invalid UTF-8 prefix", CloseReason.INVALID_FRAME_PAYLOAD_DATA)
        return out


class Oracle(FrameProtocol):
    def __init__(self, client: bool, strict_utf8: bool) -> None:
        super().__init__(client=client, extensions=[])
        if strict_utf8:
            self._message_decoder = _StrictUTF8Decoder()

    def _process_close(self, frame: Frame) -> Frame:
        # Deliberate difference: 1014 is a valid close code for harpia (IANA "Bad Gateway").
        assert isinstance(frame.payload, (bytes, bytearray))
        if bytes(frame.payload[:2]) == b"\x03\xf6":
            try:
                reason = bytes(frame.payload[2:]).decode()
            except UnicodeDecodeError:
                raise ParseFailed("bad reason", CloseReason.INVALID_FRAME_PAYLOAD_DATA) from None
            return Frame(frame.opcode, (1014, reason), frame.frame_finished,
                         frame.message_finished)
        return super()._process_close(frame)


def wsproto_events(data: bytes, *, client: bool, strict_utf8: bool) -> list[Event]:
    proto = Oracle(client, strict_utf8)
    proto.receive_bytes(data)
    events: list[Event] = []
    pieces: list[Any] = []
    try:
        for frame in proto.received_frames():
            if frame.opcode is Opcode.PING:
                events.append(("ping", bytes(frame.payload)))  # type: ignore[arg-type]
            elif frame.opcode is Opcode.PONG:
                events.append(("pong", bytes(frame.payload)))  # type: ignore[arg-type]
            elif frame.opcode is Opcode.CLOSE:
                code, reason = frame.payload  # type: ignore[str-unpack]
                events.append(("close", int(code), reason))
                break
            else:
                pieces.append(frame.payload)
                if frame.message_finished:
                    text = frame.opcode is Opcode.TEXT
                    events.append(("message", "".join(pieces) if text else b"".join(pieces)))
                    pieces = []
    except ParseFailed as exc:
        events.append(("protocol_error", int(exc.code)))
    return events


def harpia_run(data: bytes, splits: list[int], *, client: bool) -> tuple[list[Event], bytes]:
    # No size limit: wsproto has none, and a random 64-bit length must make both wait.
    engine = FrameEngine(client=client, max_payload_length=(1 << 63) - 1)
    feed_in_pieces(engine, data, splits)
    return normalize(engine.events_received()), engine.data_to_send()


def is_end(event: Event) -> bool:
    return event[0] in ("close", "protocol_error")


# --------------------------------------------------------------------------- stream strategies

SIZES = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 125, 126, 127, 128, 1000, 65535, 65536,
                     70000]),
    st.integers(0, 300),
)
CHARS = ["a", "z", " ", "\x00", "\x7f", "é", "\u07ff", "\u0800", "€", "中", "\ud7ff", "\ue000",
         "\uffff", "\U00010000", "𝄞", "😀", "\U0010ffff"]
CORRUPTIONS = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf",
               b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x80\x80\xaf",
               b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80"]
TRUNCATED = [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xe0", b"\xf4\x8f"]
CLOSE_CODES = st.one_of(
    st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 4999, 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]),
    st.integers(0, 65535),
)


def text_bytes(n: int, seed: int) -> bytes:
    """Valid UTF-8 of exactly ``n`` bytes, mixing every encoded width."""
    rnd = random.Random(seed)
    unit = "".join(rnd.choice(CHARS) for _ in range(rnd.randint(1, 600))).encode()
    data = unit * (n // len(unit) + 1)
    cut = n
    while cut > 0 and 0x80 <= data[cut] <= 0xBF:   # back off to a code point boundary
        cut -= 1
    return data[:cut] + b"a" * (n - cut)


@st.composite
def mask_for(draw: st.DrawFn, masked: bool) -> bytes | None:
    if not masked:
        return None
    return draw(st.one_of(st.just(b"\x37\xfa\x21\x3d"), st.binary(min_size=4, max_size=4)))


@st.composite
def message_item(draw: st.DrawFn, masked: bool) -> bytes:
    """A whole data message, maybe fragmented (empty fragments too) with control frames
    between the fragments, text maybe corrupted or truncated."""
    text = draw(st.booleans())
    n = draw(SIZES)
    seed = draw(st.integers(0, 1 << 16))
    payload = text_bytes(n, seed) if text else random.Random(seed).randbytes(n)
    if text:
        damage = draw(st.sampled_from(["none"] * 6 + ["corrupt", "truncate"]))
        if damage == "corrupt":
            pos = draw(st.integers(0, len(payload)))
            payload = payload[:pos] + draw(st.sampled_from(CORRUPTIONS)) + payload[pos + 1:]
        elif damage == "truncate":
            payload += draw(st.sampled_from(TRUNCATED))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    out = b""
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        out += build_frame((TEXT if text else BINARY) if i == 0 else CONT, piece, fin=last,
                           mask=draw(mask_for(masked)))
        if not last and draw(st.integers(0, 3)) == 0:
            out += draw(control_item(masked))
    return out


@st.composite
def control_item(draw: st.DrawFn, masked: bool) -> bytes:
    opcode = draw(st.sampled_from([PING, PONG]))
    payload = draw(st.binary(max_size=125))
    return build_frame(opcode, payload, mask=draw(mask_for(masked)))


@st.composite
def close_item(draw: st.DrawFn, masked: bool) -> bytes:
    shape = draw(st.sampled_from(["code", "code", "code+reason", "bad-reason", "empty", "1-byte"]))
    payload = b""
    if shape.startswith("code") or shape == "bad-reason":
        payload = struct.pack("!H", draw(CLOSE_CODES))
    if shape == "code+reason":
        payload += text_bytes(draw(st.integers(0, 123)), draw(st.integers(0, 1 << 16)))
    elif shape == "bad-reason":
        payload += draw(st.sampled_from(CORRUPTIONS + TRUNCATED))
    elif shape == "1-byte":
        payload = draw(st.binary(min_size=1, max_size=1))
    return build_frame(CLOSE, payload, mask=draw(mask_for(masked)))


@st.composite
def random_frame(draw: st.DrawFn, masked: bool) -> bytes:
    """One frame with any header: reserved opcodes and bits, wrong mask bit, fragmented
    control frames, non-minimal or out-of-range length encodings."""
    opcode = draw(st.integers(0, 15))
    fin = draw(st.booleans())
    rsv = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 4, 7]))
    is_masked = masked if draw(st.integers(0, 4)) else not masked
    n = draw(st.one_of(st.integers(0, 130), st.sampled_from([65535, 65536])))
    payload = random.Random(n).randbytes(n)
    encoding = draw(st.sampled_from(["minimal"] * 4 + ["16", "64", "msb"]))
    mask = draw(mask_for(is_masked))
    if encoding == "minimal":
        return build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
    if encoding == "16" and n <= 65535:
        return build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, ext=16)
    if encoding == "msb":
        length = (1 << 63) | draw(st.integers(0, (1 << 63) - 1))
        return build_frame(opcode, b"", fin=fin, rsv=rsv, mask=mask, ext=64, length=length)
    return build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, ext=64)


@st.composite
def stream(draw: st.DrawFn, masked: bool) -> bytes:
    items = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 9))
        if kind < 5:
            items.append(draw(message_item(masked)))
        elif kind < 7:
            items.append(draw(control_item(masked)))
        elif kind < 8:
            items.append(draw(close_item(masked)))
        else:
            items.append(draw(random_frame(masked)))
    return b"".join(items)


# --------------------------------------------------------------------------- the comparison

def check_output(events: list[Event], output: bytes, *, client: bool) -> None:
    """What harpia wrote follows from what it read: a pong per ping (same payload), then the
    close frame that answers the ending."""
    frames = decode_frames(output)
    assert all(f.masked == client for f in frames)
    pongs = [f.payload for f in frames if f.opcode == PONG]
    assert pongs == [e[1] for e in events if e[0] == "ping"]
    end = events[-1] if events and is_end(events[-1]) else None
    if end is None:
        assert close_code_sent(output) is None
    else:
        assert frames[-1].opcode == CLOSE
        assert close_code_sent(output) == end[1]


def compare(data: bytes, splits: list[int], *, client: bool) -> None:
    ours, output = harpia_run(data, splits, client=client)
    strict = wsproto_events(data, client=client, strict_utf8=True)
    if ours != strict:
        # The stream ends inside a frame that harpia already rejected from its first header
        # bytes (opcode, RSV bits, mask bit, sequencing are checked as soon as the first two
        # bytes are in) while wsproto waits for the extended length or a payload byte.
        # harpia may decide on fewer bytes, never differently: wsproto must still be
        # undecided there, and must agree once the frame is completed with padding.
        assert ours[-1][0] == "protocol_error", (ours, strict)
        assert strict == ours[:-1], (ours, strict)
        padded = wsproto_events(data + bytes(16), client=client, strict_utf8=True)
        assert padded[:len(ours)] == ours, (ours, padded)
    check_output(ours, output, client=client)

    plain = wsproto_events(data, client=client, strict_utf8=False)
    if ours != plain and ours == strict:
        # Only the surrogate case may differ: harpia fails earlier, with 1007.
        assert ours[-1] == ("protocol_error", 1007)
        assert plain[:len(ours) - 1] == ours[:-1]
        assert b"\xed" in data


SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@given(data=stream(masked=True), draw=st.data())
@SETTINGS
def test_server_role_agrees_with_wsproto(data: bytes, draw: st.DataObject) -> None:
    compare(data, draw_splits(draw, len(data)), client=False)


@given(data=stream(masked=False), draw=st.data())
@settings(SETTINGS, max_examples=120)
def test_client_role_agrees_with_wsproto(data: bytes, draw: st.DataObject) -> None:
    compare(data, draw_splits(draw, len(data)), client=True)


@given(data=st.binary(max_size=200), draw=st.data())
@settings(max_examples=300, deadline=None)
def test_random_bytes_agree_with_wsproto(data: bytes, draw: st.DataObject) -> None:
    # Pure noise: mostly reserved opcodes and bits, wrong mask bits, lying lengths.
    compare(data, draw_splits(draw, len(data)), client=False)
    compare(data, [], client=True)


# --------------------------------------------------------------------------- the known differences

def test_close_code_1014_is_accepted_unlike_wsproto() -> None:
    data = build_frame(CLOSE, b"\x03\xf6gateway", mask=b"abcd")
    assert wsproto_events(data, client=False, strict_utf8=False) == [("close", 1014, "gateway")]
    plain = FrameProtocol(client=False, extensions=[])
    plain.receive_bytes(data)
    try:
        list(plain.received_frames())
        raise AssertionError("wsproto accepted 1014; the Oracle patch can go")
    except ParseFailed as exc:
        assert exc.code == 1002
    ours, output = harpia_run(data, [], client=False)
    assert ours == [("close", 1014, "gateway")]
    assert close_code_sent(output) == 1014


def test_surrogate_prefix_fails_earlier_than_wsproto() -> None:
    # A fragment ending in ED A0 (the start of a surrogate), then a close frame.
    data = (build_frame(TEXT, b"ok\xed\xa0", fin=False, mask=b"abcd")
            + build_frame(CLOSE, b"\x03\xe8", mask=b"abcd"))
    assert wsproto_events(data, client=False, strict_utf8=False) == [("close", 1000, "")]
    assert wsproto_events(data, client=False, strict_utf8=True) == [("protocol_error", 1007)]
    assert harpia_run(data, [], client=False)[0] == [("protocol_error", 1007)]


def test_header_is_judged_from_its_first_two_bytes_unlike_wsproto() -> None:
    # A continuation frame with no message to continue, cut after its header.
    data = build_frame(CONT, b"xyz", mask=b"abcd")[:6]
    assert wsproto_events(data, client=False, strict_utf8=True) == []
    assert harpia_run(data, [], client=False)[0] == [("protocol_error", 1002)]
    compare(data, [], client=False)
