"""What a graceful shutdown delivers: messages handled before it reach every peer.

Many clients publish to a room and get an acknowledgement per message while the server
stops (``server.stop()``: 1001 to every client).  What is guaranteed, and checked here over
real sockets: every message the server's handler took (and so published and acknowledged)
reaches every client that was connected, in order, before that client's 1001; a message the
server did not handle gets no acknowledgement, so a sender knows exactly which of its
messages to send again.  Nothing is lost silently in between.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from wsclient import ws_connect

import harpia
from harpia import ServerWebSocket

CLIENTS = 16
IN_FLIGHT = 8           # unacknowledged messages per client


class Peer:
    """A client that sends numbered messages as fast as they are acknowledged and keeps
    everything it receives until the server closes the connection."""

    def __init__(self, number: int, ws: Any) -> None:
        self.number = number
        self.ws = ws
        self.room: list[str] = []          # what was published to the room, in order
        self.acks: list[str] = []
        self.sent = 0
        self.window = asyncio.Semaphore(IN_FLIGHT)

    async def receive(self) -> None:
        async for message in self.ws:
            if message.startswith("ack "):
                self.acks.append(message[4:])
                self.window.release()
            else:
                self.room.append(message)

    async def send(self) -> None:
        while True:
            await self.window.acquire()
            try:
                await self.ws.send(f"peer {self.number} message {self.sent}")
            except ConnectionClosed:
                return
            self.sent += 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("handler", ["sync", "async"])
async def test_messages_handled_before_a_graceful_stop_reach_every_peer(
        deflate: bool, handler: str) -> None:
    handled: list[str] = []                 # published to the room, in that order
    app = harpia.harpia()

    def publish(ws: ServerWebSocket[Any], message: str | bytes) -> None:
        assert isinstance(message, str)
        # An async handler may still be running when the stop begins: its publish then
        # reaches nobody (every peer is closing) and returns 0, and its ack is dropped.
        if app.publish("room", message):
            handled.append(message)
        ws.send("ack " + message)

    async def publish_later(ws: ServerWebSocket[Any], message: str | bytes) -> None:
        await asyncio.sleep(0)
        publish(ws, message)

    app.ws("/room", {"open": lambda ws: ws.subscribe("room"),
                     "message": publish if handler == "sync" else publish_later},
           per_message_deflate=deflate)
    server = await app.serve()
    peers = [Peer(i, await ws_connect(server.port, "/room").__aenter__())
             for i in range(CLIENTS)]
    receivers = [asyncio.ensure_future(peer.receive()) for peer in peers]
    senders = [asyncio.ensure_future(peer.send()) for peer in peers]
    try:
        # Under load: wait until the room is busy, then stop in the middle of it.
        for _ in range(500):
            if len(handled) >= 50 * CLIENTS:
                break
            await asyncio.sleep(0.01)
        await server.stop()
        await asyncio.wait_for(asyncio.gather(*receivers), 20)
    finally:
        for task in receivers + senders:
            task.cancel()
        for peer in peers:
            await peer.ws.__aexit__(None, None, None)
    assert len(handled) >= 50 * CLIENTS, "the room was not busy when the server stopped"
    for peer in peers:
        assert (peer.ws.close_code, peer.ws.close_reason) == (1001, "server shutting down")
        # Everything handled reached everyone, in order, nothing else.
        assert peer.room == handled, (peer.number, len(peer.room), len(handled))
        # Acknowledged = handled: what was sent but not acknowledged was not handled.
        mine = [m for m in handled if m.startswith(f"peer {peer.number} ")]
        assert peer.acks == mine
        assert len(mine) <= peer.sent
