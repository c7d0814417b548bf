"""Write seed inputs for the fuzzers: real frame sequences and upgrade requests."""
from __future__ import annotations

import sys
from pathlib import Path

from harpia._frames import serialize_frame

MASK = b"\x11\x22\x33\x44"


def frame_streams() -> list[bytes]:
    def m(op: int, payload: bytes, fin: bool = True) -> bytes:
        return serialize_frame(op, payload, fin=fin, mask=MASK)

    streams = [
        m(1, b"hello"), m(2, bytes(range(200))), m(1, "héllo ☃".encode()),
        m(1, b"frag", fin=False) + m(9, b"p") + m(0, b"ment", fin=False) + m(0, b"ed"),
        m(2, b"x" * 70000), m(8, b"\x03\xe8bye"), m(8, b""), m(10, b"pong"),
        m(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5") + m(8, b"\x03\xe9"),
    ]
    plain = [serialize_frame(1, b"server says hi"), serialize_frame(2, b"\x00" * 300),
             serialize_frame(8, b"\x03\xe8")]
    out = [bytes([0, 0]) + s for s in streams]
    out += [bytes([1, 7]) + s for s in plain]
    return out


def requests() -> list[bytes]:
    base = (b"GET /chat?x=1 HTTP/1.1\r\nHost: localhost:3000\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n")
    return [
        base + b"\r\n",
        base + b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        base + b"Sec-WebSocket-Protocol: chat, superchat\r\nOrigin: http://a.example\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus")
    for name, items in (("frames", frame_streams()), ("handshake", requests())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, item in enumerate(items):
            (folder / f"seed-{i}").write_bytes(item)


if __name__ == "__main__":
    main()
