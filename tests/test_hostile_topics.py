"""Hostile clients against pub/sub with client-named topics: a chat route that joins the
room each message names, and one client joining rooms by the hundred thousand.

The server runs in a process of its own (its memory and its loop's responsiveness are
the point) while a well-behaved client keeps echoing on the same server.
"""
from __future__ import annotations

import time
from typing import Any

from hardening import MiB, ServerProcess, http_get, push, wait_for
from wsclient import TEXT, RawClient, client_frame

import harpia

ROOMS = 100_000


def joins(count: int, prefix: str = "room") -> bytes:
    return b"".join(client_frame(TEXT, f"{prefix}-{i}") for i in range(count))


async def rooms_joined(client: RawClient) -> int:
    await client.send_frame(TEXT, "?")
    return int(await client.recv_message(timeout=60))


async def test_a_client_naming_rooms_is_capped_and_costs_little(
        loop_kind: str, bystander: Any) -> None:
    # Defaults: a client sends 100,000 room names.  Before the cap it joined them all
    # (~490 B each, 48 MiB, a /metrics of 5 MB that blocked the loop for a second).
    async with ServerProcess(loop_kind, {"/rooms": ("rooms", {})}) as server, \
            bystander(server.port, max_rtt=0.25) as b:
        client = await RawClient.open(server.port, "/rooms")
        try:
            before = server.reset_peak()
            data = joins(ROOMS)
            assert await push(client.sock, data, len(data), stall=30) == len(data)
            assert await rooms_joined(client) == 1024
            growth = server.peak() - before
            stats = await server.stats()
            started = time.perf_counter()
            metrics = await http_get(server.port, "/metrics")
            metrics_time = time.perf_counter() - started
        finally:
            client.close()
        await wait_for(lambda: _no_topics(server), 10, "the rooms to be left")
    print(f"bystander p99 {b.rtts and sorted(b.rtts)[int(len(b.rtts) * 0.99)] * 1000:.1f} ms, "
          f"growth {growth / MiB:.1f} MiB, /metrics {len(metrics.body)} B in "
          f"{metrics_time * 1000:.1f} ms")
    assert stats["subscriptions"] == stats["topic_count"] == 1024
    assert stats["subscriptions_refused"] == ROOMS - 1024
    assert len(stats["topics"]) <= 100
    assert metrics.status == 200 and len(metrics.body) < 8 * 1024
    assert b"harpia_subscriptions_refused_total 98976" in metrics.body
    assert b"topic_subscribers{" not in metrics.body        # per-topic only on request
    assert growth < 8 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"


async def _no_topics(server: ServerProcess) -> bool:
    return (await server.stats())["topic_count"] == 0


async def test_closing_a_connection_with_many_rooms_does_not_stall_the_others(
        loop_kind: str, bystander: Any) -> None:
    # The app raised the cap: leaving 100,000 rooms at once took the loop ~1 s before;
    # now it is done a batch per loop turn while the others are served.
    routes = {"/rooms": ("rooms", {"max_subscriptions": ROOMS})}
    async with ServerProcess(loop_kind, routes) as server:
        client = await RawClient.open(server.port, "/rooms")
        data = joins(ROOMS)
        try:
            assert await push(client.sock, data, len(data), stall=30) == len(data)
            assert await rooms_joined(client) == ROOMS
        except BaseException:
            client.close()
            raise
        async with bystander(server.port, max_rtt=0.25):
            client.reset()
            await wait_for(lambda: _no_topics(server), 20, "the rooms to be left")
        stats = await server.stats()
        assert stats["subscriptions"] == 0




async def test_per_topic_metrics_only_on_request_and_bounded() -> None:
    app = harpia.harpia()
    app.ws("/rooms", {"message": lambda ws, m: ws.subscribe(str(m))})
    async with app.serve() as server:
        client = await RawClient.open(server.port, "/rooms")
        try:
            await client.send(joins(500))
            await wait_for(lambda: app.stats()["topic_count"] == 500, 10, "500 rooms")
            assert "topic_subscribers{" not in app.metrics_text()
            assert "harpia_topic_count 500" in app.metrics_text()
            assert app.metrics_text(topics=10).count("harpia_topic_subscribers{") == 10
            assert len(app.stats()["topics"]) == 100
            assert len(app.stats(topics=1000)["topics"]) == 500
        finally:
            client.close()
