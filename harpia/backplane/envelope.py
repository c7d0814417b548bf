"""The bytes harpia puts on a Redis channel: an envelope of one process's messages to one topic.

An envelope is ``MAGIC`` + the sending process's 8-byte id, then records of ``opcode``
(1 byte: 1 text, 2 binary) + payload length (4 bytes, big endian) + payload. A channel
message that does not start with ``MAGIC`` was published by something else
(``redis-cli PUBLISH harpia:news hello``): it is one message, text if it is valid UTF-8,
else binary.  Pure bytes, never pickled; the same format on every kind of Redis deployment.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable

from .. import _frames

__all__ = ["MAGIC", "ORIGIN_BYTES", "ENVELOPE_LIMIT", "encode_envelope", "decode_envelope",
           "frames_of"]

#: First bytes of every envelope harpia publishes (a NUL, "hp", format version 1).
MAGIC = b"\x00hp\x01"
#: Bytes of the sending process's id after ``MAGIC``.
ORIGIN_BYTES = 8
#: An envelope is sealed once it holds this many bytes; later messages start a new one.
#: (Redis drops a subscriber whose output buffer passes 32 MiB: keep messages well under.)
ENVELOPE_LIMIT = 256 * 1024

_RECORD = struct.Struct(">BI")
_HEADER = len(MAGIC) + ORIGIN_BYTES
_TEXT, _BINARY = 1, 2



def encode_envelope(origin: bytes, messages: Iterable[str | bytes]) -> bytes:
    """An envelope as harpia publishes it (for other producers, and for tests)."""
    if len(origin) != ORIGIN_BYTES:
        raise ValueError(f"origin must be {ORIGIN_BYTES} bytes")
    out = bytearray(MAGIC + origin)
    for message in messages:
        if isinstance(message, str):
            data, opcode = message.encode(), _TEXT
        else:
            data, opcode = bytes(message), _BINARY
        out += _RECORD.pack(opcode, len(data))
        out += data
    return bytes(out)


def decode_envelope(data: bytes) -> bytes:
    """The server frames of the records of an envelope, concatenated.  ValueError if it is
    truncated or holds an opcode other than text or binary."""
    view = memoryview(data)
    end = len(data)
    offset = _HEADER
    serialize = _frames.serialize_frame
    frames = []
    while offset < end:
        if offset + 5 > end:
            raise ValueError("truncated record header")
        opcode, length = _RECORD.unpack_from(data, offset)
        offset += 5
        if opcode != _TEXT and opcode != _BINARY:
            raise ValueError(f"opcode {opcode} is neither text nor binary")
        if offset + length > end:
            raise ValueError("truncated record")
        frames.append(serialize(opcode, view[offset:offset + length]))
        offset += length
    if len(frames) == 1:
        return frames[0]
    return b"".join(frames)


def frames_of(data: bytes) -> bytes:
    """The server frames to deliver for one channel message (an envelope, or anything else
    published on the channel, as one message).  ValueError for a malformed envelope."""
    if data.startswith(MAGIC):
        return decode_envelope(data)
    return _frames.serialize_frame(_TEXT if _frames.utf8_valid(data) else _BINARY, data)
