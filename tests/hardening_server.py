"""A harpia server in a process of its own, for the hardening tests that measure its
memory (VmRSS) or must keep an attacker's threads off its interpreter.

    python hardening_server.py LOOP CONFIG_JSON

``LOOP`` is ``asyncio`` or ``uvloop``; ``CONFIG_JSON`` is ``{"app": {harpia() settings},
"routes": {path: [kind, {route options}]}}`` and optionally ``"tls": {"key": ..., "cert":
...}`` for a second listener with TLS (its port printed after the plain one) with these kinds of route:

- ``echo``: sends every message back (``/echo`` is always served, for the bystander);
- ``sink``: no handlers at all;
- ``slow``: an ``async def`` message handler that takes 10 ms per message;
- ``feed``: subscribes to ``"feed"`` on open, and nothing else;
- ``rooms``: a chat that joins the room each message names (``ws.subscribe(message)``);
  the message ``"?"`` answers how many rooms the connection is in;
- ``publisher``: the message ``"publish N SIZE"`` publishes N messages of SIZE bytes to
  ``"feed"``, yielding to the loop every 16 of them as a real producer does, then answers
  ``"published"``.

``GET /metrics`` serves ``app.metrics_text()``; ``GET /stats`` answers ``app.stats()`` plus ``pending`` (handshakes in progress), ``live``
(WebSocket connections not yet gone, closing ones included) and ``objects`` (connection
objects alive after ``gc.collect()``).  Prints the port on
stdout, logs warnings to stderr, and serves until stdin is closed.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
from typing import Any

import uvloop

import harpia
from harpia import ServerWebSocket
from harpia.server import HttpProtocol


async def slow(ws: ServerWebSocket[Any], message: str | bytes) -> None:
    await asyncio.sleep(0.01)


def make_app(config: dict[str, Any]) -> harpia.App:
    app = harpia.harpia(**config.get("app", {}))

    async def publish(ws: ServerWebSocket[Any], message: str | bytes) -> None:
        _, count, size = str(message).split()
        body = b"p" * int(size)
        for i in range(int(count)):
            app.publish("feed", body)
            if i % 16 == 15:
                await asyncio.sleep(0)
        ws.send("published")

    def join(ws: ServerWebSocket[Any], message: str | bytes) -> None:
        if message == "?":
            ws.send(str(len(ws.subscriptions)))
        else:
            ws.subscribe(str(message))

    kinds: dict[str, dict[str, Any]] = {
        "echo": {"message": lambda ws, message: ws.send(message)},
        "sink": {},
        "slow": {"message": slow},
        "feed": {"open": lambda ws: ws.subscribe("feed")},
        "publisher": {"message": publish},
        "rooms": {"message": join},
    }
    routes = {"/echo": ["echo", {}], **config.get("routes", {})}
    for path, (kind, options) in routes.items():
        app.ws(path, kinds[kind], **options)
    app.expose_metrics()
    return app


def objects() -> dict[str, int]:
    """Connection objects still alive after a full collection (a leak shows here first)."""
    gc.collect()
    counts = {"ServerWebSocket": 0, "HttpProtocol": 0}
    for obj in gc.get_objects():
        if isinstance(obj, ServerWebSocket):
            counts["ServerWebSocket"] += 1
        elif isinstance(obj, HttpProtocol):
            counts["HttpProtocol"] += 1
    return counts


async def serve(app: harpia.App, tls: dict[str, str] | None = None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(app.serve(port=0))
        ports = [server.port]
        if tls is not None:
            # A second listener of the same app, with TLS: its port follows on the line.
            secure = await stack.enter_async_context(app.serve(port=0, tls=tls))
            ports.append(secure.port)
        app.get("/stats", lambda: {**app.stats(), "pending": server.pending_handshakes(),
                                   "live": server.open_connections(), "objects": objects()})
        print(*ports, flush=True)
        loop = asyncio.get_running_loop()
        stdin_closed = loop.create_future()

        def read_stdin() -> None:
            if not os.read(0, 4096):
                loop.remove_reader(0)
                stdin_closed.set_result(None)

        loop.add_reader(0, read_stdin)
        await stdin_closed


def main() -> None:
    loop_kind, config = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(make_app(config), config.get("tls")))


if __name__ == "__main__":
    main()
