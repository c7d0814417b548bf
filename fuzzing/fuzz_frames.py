"""Fuzz the frame engine: any bytes, split anywhere, in either role.

The contract under test: ``feed`` never raises, whatever arrives; every event is one of the
documented kinds; a protocol error carries an RFC 6455 close code and ends the input; the
engine never holds more than its limits allow.

    python fuzzing/fuzz_frames.py -max_total_time=60      (atheris / libFuzzer flags)
"""
from __future__ import annotations

import random
import sys

import atheris

with atheris.instrument_imports():
    from harpia._frames import FrameEngine

MAX_PAYLOAD = 4096
EVENT_KINDS = {"message", "ping", "pong", "close", "protocol_error", "drain"}
ERROR_CODES = {1002, 1007, 1009}


def check(data: bytes) -> None:
    # Input layout: one flag byte (role, deflate), one byte seeding where the stream is
    # split, then the byte stream itself, so seeds can be real frame sequences.
    if len(data) < 2:
        return
    flags, split_seed, stream = data[0], data[1], data[2:]
    engine = FrameEngine(client=bool(flags & 1), max_payload_length=MAX_PAYLOAD,
                         backpressure_limit=8192)
    if flags & 2 and hasattr(engine, "enable_deflate"):
        engine.enable_deflate()
    rng = random.Random(split_seed)
    pieces = []
    pos = 0
    while pos < len(stream):
        size = rng.choice((1, 2, 3, 7, 64, 1000))
        pieces.append(stream[pos:pos + size])
        pos += size
    ended = False
    for piece in pieces:
        engine.feed(piece)
        for event in engine.events_received():
            kind = event[0]
            assert kind in EVENT_KINDS, event
            assert not ended, f"event after the input ended: {event!r}"
            if kind == "message":
                assert isinstance(event[1], (str, bytes)) and len(event[1]) <= MAX_PAYLOAD
            elif kind == "protocol_error":
                assert event[1] in ERROR_CODES, event
                ended = True
            elif kind == "close":
                ended = True
        assert engine.held_bytes == 0
        engine.data_to_send()  # output never grows without bound: taken each round


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
