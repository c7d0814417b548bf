"""Frames built and decoded from RFC 6455 section 5.2, for the frame engine tests.

Written from the RFC directly, without the engine, so a test never checks the engine
against itself.  The ``test_frames_*.py`` modules import this one by name (pytest's
default ``prepend`` import mode puts ``tests/`` on ``sys.path``); its own tests are in
``test_frame_builder.py``.
"""
from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harpia._frames import FrameEngine

KEY = b"\x37\xfa\x21\x3d"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
OPCODE_NAMES = {CONT: "cont", TEXT: "text", BINARY: "binary", CLOSE: "close", PING: "ping",
                PONG: "pong"}


# --------------------------------------------------------------------------- building frames

def xor(data: bytes, key: bytes, phase: int = 0) -> bytes:
    """The reference masking loop (RFC 6455 section 5.3): byte ``i`` is XORed with
    ``key[(i + phase) % 4]``, one byte at a time (in C iterators, to stay quick on 1 MiB)."""
    rotated = key[phase % 4:] + key[:phase % 4]
    return bytes(map(operator.xor, data, itertools.cycle(rotated)))


def build_frame(opcode: int, payload: bytes | str = b"", *, fin: bool = True, rsv: int = 0,
                mask: bytes | None = None, ext: int | None = None,
                length: int | None = None) -> bytes:
    """One frame, byte by byte.

    ``rsv`` is the 3-bit RSV field (4 = RSV1).  ``ext`` forces the length field: 7, 16 or 64
    bits (None: the minimal one).  ``length`` announces a length other than the payload's
    (to build lying or out-of-range headers).
    """
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    n = len(data) if length is None else length
    if ext is None:
        ext = 7 if n <= 125 else 16 if n <= 65535 else 64
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    m = 0x80 if mask is not None else 0
    if ext == 7:
        head = bytes([b0, m | n])
    elif ext == 16:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + data
    return head + mask + xor(data, mask)


def cf(opcode: int, payload: bytes | str = b"", **kw: Any) -> bytes:
    """A client frame (masked with ``KEY`` unless ``mask`` is given): what a server reads."""
    kw.setdefault("mask", KEY)
    return build_frame(opcode, payload, **kw)


def sf(opcode: int, payload: bytes | str = b"", **kw: Any) -> bytes:
    """A server frame (unmasked unless ``mask`` is given): what a client reads."""
    return build_frame(opcode, payload, **kw)


def close_payload(code: int | None, reason: bytes | str = b"") -> bytes:
    if code is None:
        return b""
    return struct.pack("!H", code) + (reason.encode() if isinstance(reason, str) else reason)


# --------------------------------------------------------------------------- decoding output

@dataclass(frozen=True)
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes


def decode_frames(data: bytes) -> list[Frame]:
    """Every frame in ``data`` (which must hold whole frames only), unmasked."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        key = None
        if b1 & 0x80:
            key = data[pos:pos + 4]
            pos += 4
        payload = data[pos:pos + n]
        assert len(payload) == n, "truncated frame in the engine's output"
        pos += n
        frames.append(Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, key is not None,
                            xor(payload, key) if key is not None else payload))
    return frames


def describe_output(data: bytes, *, masked: bool) -> list[tuple[Any, ...]]:
    """The engine's output as ``("pong", payload)``, ``("close", code, reason)``, ``("close",)``
    (no code), ``("text", str)``...; checks every frame's mask bit against the role."""
    out: list[tuple[Any, ...]] = []
    for f in decode_frames(data):
        assert f.masked == masked, f"frame mask bit is {f.masked}, expected {masked}"
        assert f.fin
        name = OPCODE_NAMES[f.opcode]
        if f.opcode == CLOSE:
            if not f.payload:
                out.append(("close",))
            else:
                (code,) = struct.unpack("!H", f.payload[:2])
                out.append(("close", code, f.payload[2:].decode()))
        elif f.opcode == TEXT:
            out.append((name, f.payload.decode()))
        else:
            out.append((name, f.payload))
    return out


def close_code_sent(data: bytes) -> int | None:
    """The code of the last close frame in ``data`` (1005 for an empty one); None if none."""
    code = None
    for f in decode_frames(data):
        if f.opcode == CLOSE:
            code = struct.unpack("!H", f.payload[:2])[0] if f.payload else 1005
    return code


def normalize(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Events without the free-text parts that say nothing about behaviour."""
    out: list[tuple[Any, ...]] = []
    for ev in events:
        if ev[0] == "protocol_error":
            out.append(("protocol_error", ev[1]))
        elif ev[0] == "handler_error":
            out.append(("handler_error", type(ev[1])))
        else:
            out.append(ev)
    return out


# --------------------------------------------------------------------------- feeding

def feed_in_pieces(engine: FrameEngine, data: bytes, splits: Sequence[int]) -> None:
    """Feed ``data`` cut at the offsets in ``splits`` (any order, duplicates and the ends
    allowed: an empty piece is fed too, which must be harmless)."""
    cuts = [0, *sorted(min(max(s, 0), len(data)) for s in splits), len(data)]
    for a, b in zip(cuts, cuts[1:]):
        engine.feed(data[a:b])


def every_byte(data: bytes) -> list[int]:
    """Split points that feed ``data`` one byte at a time."""
    return list(range(1, len(data)))


def draw_splits(draw_data: st.DataObject, size: int, max_cuts: int = 12) -> list[int]:
    """Random split points for ``size`` bytes, drawn from hypothesis' ``st.data()``."""
    return draw_data.draw(st.lists(st.integers(0, size), max_size=max_cuts), label="splits")


def run(data: bytes, splits: Sequence[int] = (), **engine_kw: Any
        ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], FrameEngine]:
    """A fresh engine fed ``data`` in pieces: (normalized events, output, engine)."""
    engine = FrameEngine(**engine_kw)
    feed_in_pieces(engine, data, splits)
    return (normalize(engine.events_received()),
            describe_output(engine.data_to_send(), masked=engine.client), engine)


# --------------------------------------------------------------------------- UTF-8 oracle

def utf8_valid_prefix(data: bytes) -> bool:
    """True if some continuation makes ``data`` valid UTF-8 (RFC 3629), decided with Python's
    codec only: strip an incomplete last sequence, decode strictly, then try to complete it."""
    tail_start = max(len(data) - 3, 0)
    for cut in range(len(data), tail_start - 1, -1):
        head, tail = data[:cut], data[cut:]
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not tail:
            return True
        lead = tail[0]
        size = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else \
            4 if 0xF0 <= lead <= 0xF4 else 0
        if size <= len(tail):
            continue
        seconds = range(0x80, 0xC0) if len(tail) == 1 else [tail[1]]
        for second in seconds:
            candidate = (bytes([lead, second]) + tail[2:]).ljust(size, b"\x80")
            try:
                candidate.decode("utf-8")
                return True
            except UnicodeDecodeError:
                pass
    return False
