"""Pub/sub and the live connection set: units on ConnectionSet and TopicRegistry (with
sans-I/O engines as subscribers), then the same behaviour over real sockets."""
from __future__ import annotations

import asyncio
import zlib
from typing import Any

import pytest
from wsclient import Mailbox, RawClient, closed_code, ws_connect

import harpia
from harpia import ServerWebSocket
from harpia._frames import FrameEngine, serialize_frame
from harpia.topics import ConnectionSet, TopicRegistry

# --------------------------------------------------------------------------- ConnectionSet


def test_connection_set_is_sized_iterable_and_ordered() -> None:
    members: ConnectionSet[str] = ConnectionSet()
    assert len(members) == 0 and list(members) == []
    for name in ("a", "b", "c"):
        members.add(name)
    members.add("a")                       # already there: no duplicate
    assert len(members) == 3
    assert list(members) == ["a", "b", "c"]
    assert "b" in members and "z" not in members
    members.discard("b")
    members.discard("z")                   # absent: nothing happens
    assert list(members) == ["a", "c"]
    assert repr(members) == "<ConnectionSet of 2>"


def test_iterating_while_members_leave_and_join_never_raises() -> None:
    members: ConnectionSet[int] = ConnectionSet()
    for i in range(10):
        members.add(i)
    seen = []
    for i in members:
        seen.append(i)
        members.discard(i)                 # a connection closing during a broadcast
        members.discard(i + 1)
        members.add(100 + i)
    # The loop walked the members as they were when it started.
    assert seen == list(range(10))
    assert list(members) == [100 + i for i in range(10)]


def test_snapshot_is_cached_until_membership_changes() -> None:
    members: ConnectionSet[str] = ConnectionSet()
    members.add("a")
    first = members.snapshot()
    assert members.snapshot() is first
    members.discard("missing")
    assert members.snapshot() is first     # no change, no rebuild
    members.add("b")
    assert members.snapshot() == ("a", "b") and members.snapshot() is not first


def test_for_each_is_buns_spelling() -> None:
    members: ConnectionSet[str] = ConnectionSet()
    members.add("x")
    members.add("y")
    called: list[str] = []
    members.forEach(called.append)
    members.for_each(called.append)
    assert called == ["x", "y", "x", "y"]


# --------------------------------------------------------------------------- TopicRegistry

def test_registry_subscribe_unsubscribe_counts_and_callbacks() -> None:
    registry = TopicRegistry()
    events: list[tuple[str, str]] = []
    registry.on_first_subscriber = lambda topic: events.append(("first", topic))
    registry.on_last_subscriber = lambda topic: events.append(("last", topic))
    a, b = FrameEngine(), FrameEngine()
    assert registry.subscribe("t", a) is True
    assert registry.subscribe("t", a) is False
    assert registry.subscribe("t", b) is True
    assert registry.subscriber_count("t") == 2 and registry.subscriber_count("u") == 0
    assert registry.topics() == ["t"]
    assert registry.unsubscribe("t", a) is True
    assert registry.unsubscribe("t", a) is False
    assert registry.unsubscribe("u", a) is False
    assert registry.unsubscribe("t", b) is True
    assert registry.topics() == [] and registry.subscriber_count("t") == 0
    assert events == [("first", "t"), ("last", "t")]


def test_registry_publish_serializes_once_and_excludes() -> None:
    registry = TopicRegistry()
    engines = [FrameEngine() for _ in range(3)]
    for engine in engines:
        registry.subscribe("news", engine)
    assert registry.publish("news", "hello", exclude=engines[0]) == 2
    assert registry.publish("nobody", "hello") == 0
    assert engines[0].data_to_send() == b""
    frame = serialize_frame(1, "hello")
    assert engines[1].data_to_send() == frame == engines[2].data_to_send()
    assert registry.publish("news", b"\x00\x01") == 3
    assert [e.data_to_send() for e in engines] == [serialize_frame(2, b"\x00\x01")] * 3
    raw = serialize_frame(2, b"prebuilt")
    assert registry.publish_serialized("news", raw) == 3
    assert [e.data_to_send() for e in engines] == [raw] * 3


def test_registry_publish_skips_closing_subscribers() -> None:
    registry = TopicRegistry()
    open_, closing = FrameEngine(), FrameEngine()
    registry.subscribe("t", open_)
    registry.subscribe("t", closing)
    closing.close(1000)
    closing.data_to_send()
    assert registry.publish("t", "x") == 1
    assert closing.data_to_send() == b"" and closing.dropped == 1
    assert open_.data_to_send() == serialize_frame(1, "x")


# --------------------------------------------------------------------------- over sockets

def pubsub_app(mailbox: Mailbox, **options: Any) -> harpia.App:
    """Commands as messages: "sub:<t>", "unsub:<t>", "pub:<t>:<text>", "state:<t>"."""
    app = harpia.harpia()

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        assert isinstance(msg, str)
        command, _, rest = msg.partition(":")
        if command == "sub":
            mailbox.put("sub", ws.subscribe(rest))
        elif command == "unsub":
            mailbox.put("unsub", ws.unsubscribe(rest))
        elif command == "pub":
            topic, _, text = rest.partition(":")
            mailbox.put("pub", ws.publish(topic, text))
        elif command == "state":
            mailbox.put("state", ws.is_subscribed(rest), ws.isSubscribed(rest), ws.subscriptions)

    app.ws("/", {"message": message,
                 "close": lambda ws: mailbox.put("closed", ws.subscriptions)}, **options)
    return app


async def test_subscribe_unsubscribe_and_subscriptions() -> None:
    mailbox = Mailbox()
    app = pubsub_app(mailbox)
    async with app.serve() as server, ws_connect(server.port) as client:
        for command in ("sub:b", "sub:a", "sub:a", "state:a"):
            await client.send(command)
        assert [await mailbox.get() for _ in range(4)] == [
            ("sub", True), ("sub", True), ("sub", False), ("state", True, True, ["a", "b"])]
        assert app.websocket.subscriber_count("a") == app.websocket.subscriberCount("b") == 1
        for command in ("unsub:a", "unsub:a", "unsub:never", "state:a"):
            await client.send(command)
        assert [await mailbox.get() for _ in range(4)] == [
            ("unsub", True), ("unsub", False), ("unsub", False), ("state", False, False, ["b"])]
        assert app.websocket.subscriber_count("a") == 0


async def test_ws_publish_reaches_others_but_not_itself() -> None:
    mailbox = Mailbox()
    app = pubsub_app(mailbox)
    async with app.serve() as server, ws_connect(server.port) as a, \
            ws_connect(server.port) as b, ws_connect(server.port) as outsider:
        for client in (a, b):
            await client.send("sub:room")
            assert await mailbox.get() == ("sub", True)
        await a.send("pub:room:from a")
        assert await mailbox.get() == ("pub", 1)            # b only
        assert await b.recv() == "from a"
        await outsider.send("pub:room:from outside")         # publishing needs no subscription
        assert await mailbox.get() == ("pub", 2)
        assert [await a.recv(), await b.recv()] == ["from outside", "from outside"]
        await a.send("pub:room:again")
        assert await mailbox.get() == ("pub", 1)
        assert await b.recv() == "again"
        # a got nothing of its own: the next thing it receives is this publish from b.
        await b.send("pub:room:from b")
        assert await a.recv() == "from b"
        await outsider.ping()
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(outsider.recv(), 0.05)


async def test_publish_to_self_includes_the_publisher() -> None:
    mailbox = Mailbox()
    app = pubsub_app(mailbox, publish_to_self=True)
    async with app.serve() as server, ws_connect(server.port) as a, ws_connect(server.port) as b:
        for client in (a, b):
            await client.send("sub:room")
            await mailbox.get()
        await a.send("pub:room:echoed")
        assert await mailbox.get() == ("pub", 2)
        assert [await a.recv(), await b.recv()] == ["echoed", "echoed"]


async def test_app_publish_text_and_binary() -> None:
    mailbox = Mailbox()
    app = pubsub_app(mailbox)
    async with app.serve() as server, ws_connect(server.port) as a, ws_connect(server.port) as b:
        for client in (a, b):
            await client.send("sub:news")
            await mailbox.get()
        await a.send("sub:only-a")
        await mailbox.get()
        assert app.publish("news", "text") == 2
        assert app.publish("news", b"\x00bin") == 2
        assert app.websocket.publish("news", bytearray(b"ba")) == 2
        assert app.publish("only-a", "just a") == 1
        assert app.publish("nobody", "lost") == 0
        assert [await a.recv() for _ in range(4)] == ["text", b"\x00bin", b"ba", "just a"]
        assert [await b.recv() for _ in range(3)] == ["text", b"\x00bin", b"ba"]


async def test_subscriptions_are_dropped_at_close() -> None:
    mailbox = Mailbox()
    app = pubsub_app(mailbox)
    async with app.serve() as server:
        async with ws_connect(server.port) as a, ws_connect(server.port) as b:
            for client in (a, b):
                for topic in ("x", "y"):
                    await client.send(f"sub:{topic}")
                    await mailbox.get()
            assert app.websocket.subscriber_count("x") == 2
            await a.close()
            assert await mailbox.get() == ("closed", [])
            assert app.websocket.subscriber_count("x") == 1
            assert app.publish("x", "after a left") == 1
            assert await b.recv() == "after a left"
        assert await mailbox.get() == ("closed", [])
        assert app.websocket.subscriber_count("x") == app.websocket.subscriber_count("y") == 0
        assert app.hub.topics.topics() == []


async def test_subscribe_after_close_is_refused() -> None:
    results: list[bool] = []

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        ws.close()
        results.append(ws.subscribe("late"))

    app = harpia.harpia()
    app.ws("/", {"message": message})
    async with app.serve() as server, ws_connect(server.port) as client:
        await client.send("x")
        assert await closed_code(client) == (1000, "")       # close() defaults to 1000
    assert results == [False]
    assert app.websocket.subscriber_count("late") == 0


async def test_connections_is_a_live_view_of_open_connections() -> None:
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/a", {"open": lambda ws: mailbox.put("open")})
    app.ws("/b", {"open": lambda ws: mailbox.put("open"),
                  "message": lambda ws: ws.close(1000)})
    connections = app.websocket.connections
    async with app.serve() as server:
        async with ws_connect(server.port, "/a") as a, ws_connect(server.port, "/b") as b:
            await mailbox.get()
            await mailbox.get()
            assert len(connections) == 2
            assert sorted(ws.path for ws in connections) == ["/a", "/b"]
            assert all(ws.readyState == harpia.OPEN for ws in connections)
            await b.send("leave")
            await closed_code(b)
            assert [ws.path for ws in connections] == ["/a"]   # same object, updated
            assert app.websocket.connections is connections
        await asyncio.sleep(0.05)
        assert len(connections) == 0


async def test_iterating_connections_while_they_close_never_raises() -> None:
    mailbox = Mailbox()

    def close_everyone(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        visited = 0
        try:
            for client in app.websocket.connections:
                visited += 1
                client.close(1000, "bye")          # leaves the set during the loop
                client.terminate() if visited % 2 else None
            mailbox.put("done", visited, len(app.websocket.connections))
        except Exception as exc:                   # pragma: no cover - the failure case
            mailbox.put("raised", repr(exc))

    app = harpia.harpia()
    app.ws("/", {"message": close_everyone, "open": lambda ws: mailbox.put("open")})
    async with app.serve() as server:
        clients = [await ws_connect(server.port).__aenter__() for _ in range(6)]
        try:
            for _ in clients:
                await mailbox.get()
            await clients[0].send("close all")
            assert await mailbox.get() == ("done", 6, 0)
            for client in clients:
                code, _ = await closed_code(client)
                assert code in (1000, 1006)
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)


async def test_broadcast_while_clients_disconnect() -> None:
    mailbox = Mailbox()

    def broadcast(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        sent = 0
        for client in app.websocket.connections:
            if client.readyState == 1:
                sent += client.send(msg) > 0
        mailbox.put("sent", sent)

    app = harpia.harpia()
    app.ws("/", {"message": broadcast, "open": lambda ws: mailbox.put("open")})
    async with app.serve() as server:
        # The speaker hears its own broadcasts and does not read them: let them queue.
        speaker = await ws_connect(server.port, max_queue=None).__aenter__()
        leavers = [await ws_connect(server.port).__aenter__() for _ in range(10)]
        for _ in range(11):
            await mailbox.get()
        # Half the listeners drop at once, while the broadcasts go out.
        for client in leavers[:5]:
            client.transport.abort()
        for i in range(20):
            await speaker.send(f"m{i}")
        results = [(await mailbox.get_kind("sent"))[1] for _ in range(20)]
        assert all(6 <= n <= 11 for n in results)
        await asyncio.sleep(0.05)
        await speaker.send("final")
        assert await mailbox.get_kind("sent") == ("sent", 6)    # the speaker and five others
        for client in leavers[5:]:
            assert [await client.recv() for _ in range(21)] == [f"m{i}" for i in range(20)] + ["final"]
        await speaker.__aexit__(None, None, None)
        for client in leavers:
            await client.__aexit__(None, None, None)


async def test_publish_compress_flag_reaches_deflate_subscribers() -> None:
    app = harpia.harpia()
    app.ws("/", {"open": lambda ws: ws.subscribe("t")}, per_message_deflate=True)
    async with app.serve() as server:
        client = await RawClient.open(
            server.port, "/", headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
        try:
            async def next_frame() -> tuple[bool, bytes]:
                b0, b1 = await client._take(2, 5.0)
                length = b1 & 0x7F
                if length == 126:
                    length = int.from_bytes(await client._take(2, 5.0), "big")
                payload = await client._take(length, 5.0)
                return bool(b0 & 0x40), bytes(payload)

            def inflate(data: bytes) -> str:
                return zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff").decode()

            small = "a" * 100                                       # under the threshold (128)
            assert app.publish("t", small, compress=True) == 1
            assert app.publish("t", "big " * 50, compress=False) == 1
            assert app.publish("t", small) == 1                     # default: the threshold
            rsv1, payload = await next_frame()
            assert rsv1 and len(payload) < 20 and inflate(payload) == small
            assert await next_frame() == (False, ("big " * 50).encode())
            assert await next_frame() == (False, small.encode())
        finally:
            client.close()
