#!/usr/bin/env python3
"""Memory per connection with permessage-deflate: the server's RSS growth per connection.

Each server runs in its own process; N clients connect, offer permessage-deflate the way
Chromium does ("permessage-deflate; client_max_window_bits"), each send one compressed
4 KiB JSON-like text message and read the echo, then stay open and idle.  The figure is
(RSS with N connections - RSS before) / N, so it includes everything a connection costs:
the socket's Python objects, the engine, and the zlib state it keeps.

    python benchmarks/deflate_memory.py [--conns 2000]

Compared in the same run: harpia without deflate, harpia's defaults (no context takeover
either way), harpia with context takeover both ways, and websockets with its deflate
defaults.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS: dict[str, tuple[str, object]] = {
    "harpia, no deflate": ("harpia", False),
    "harpia, deflate defaults": ("harpia", True),
    "harpia, context takeover both ways": (
        "harpia", {"server_no_context_takeover": False, "client_no_context_takeover": False}),
    "harpia, client context kept, client window 12": (
        "harpia", {"client_no_context_takeover": False, "client_max_window_bits": 12}),
    "websockets 17, deflate defaults": ("websockets", True),
}


def serve(kind: str, deflate: object, port: int) -> None:
    if kind == "harpia":
        from harpia import harpia
        app = harpia()
        app.ws("/", {"message": lambda ws, m: ws.send(m)}, per_message_deflate=deflate,
               idle_timeout=0)
        app.listen(host="127.0.0.1", port=port)
        return
    import asyncio

    from websockets.asyncio.server import serve as ws_serve

    async def echo(ws):  # type: ignore[no-untyped-def]
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with ws_serve(echo, "127.0.0.1", port, ping_interval=None,
                            compression="deflate" if deflate else None) as server:
            await server.serve_forever()
    asyncio.run(main())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def message() -> bytes:
    items, i = [], 0
    while sum(map(len, items)) < 4096:
        items.append(json.dumps({"id": i, "user": f"user{i % 50}", "active": i % 3 == 0}))
        i += 1
    return ("[" + ",".join(items) + "]").encode()[:4096]


def client_frame(payload: bytes, compressed: bool) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0xC1 if compressed else 0x81])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


def open_connection(port: int, frame: bytes, deflate: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (b"permessage-deflate" in head.lower()) == deflate, head
    sock.sendall(frame)
    while len(rest) < 4:                      # the echo: at least its header
        rest += sock.recv(65536)
    return sock


def measure(name: str, kind: str, deflate: object, conns: int) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, json.dumps(deflate), str(port)],
                            env=env, stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        payload = message()
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        compressed = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
        frame = client_frame(compressed[:-4] if deflate else payload, bool(deflate))
        # Warm up: allocator arenas, the shared compressor, the inflater pool.
        warm = [open_connection(port, frame, bool(deflate)) for _ in range(50)]
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        socks = [open_connection(port, frame, bool(deflate)) for _ in range(conns)]
        time.sleep(1.0)
        after = rss_kib(proc.pid)
        for sock in socks + warm:
            sock.close()
        per = (after - before) / conns
        print(f"| {name} | {per:.1f} |", flush=True)
        return per
    finally:
        proc.terminate()
        proc.wait(10)


def raise_nofile(need: int) -> None:
    """Open files for ``need`` sockets, in this process and the servers it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=2000)
    args = parser.parse_args()
    raise_nofile(2 * args.conns + 256)        # the clients' sockets and the server's
    print(f"{args.conns} connections, each sent one compressed 4 KiB message and got its echo.\n")
    print("| server | KiB per connection |")
    print("|---|---:|")
    for name, (kind, deflate) in CONFIGS.items():
        measure(name, kind, deflate, args.conns)


if __name__ == "__main__":
    main()
