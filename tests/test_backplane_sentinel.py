"""The Sentinel backplane against a real master, replica and three sentinels (started here):
delivery across processes, then the master killed and deliveries resuming on the replica
the sentinels promote, without restarting harpia.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis_cluster import SentinelSetup, sentinel  # noqa: F401 - a fixture
from test_backplane import close_all, command, eventually, expect, make_app, open_clients
from test_backplane import check_silent_host_fails_start, fast_backplane
from test_backplane_cluster import expect_after_failover, publish_until_received

from harpia import ConfigurationError, RedisSentinelBackplane
from harpia.backplane import make_backplane


def backplane(url: str, **options: Any) -> RedisSentinelBackplane:
    options.setdefault("ping_interval", 1.0)
    return fast_backplane(RedisSentinelBackplane, url, **options)


def numsub(node: Any, channel: str) -> int:
    reply = node.command("PUBSUB", "NUMSUB", channel)
    return int(reply[1])


def test_sentinel_urls() -> None:
    bp = make_backplane("redis+sentinel://127.0.0.1:26379,10.0.0.2/mymaster")
    assert isinstance(bp, RedisSentinelBackplane)
    assert bp.sentinels == [("127.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert bp.service_name == "mymaster"
    assert bp.max_backoff == 1.0  # a failover is expected: retry at least every second
    for bad in ("redis+sentinel://h:26379", "redis+sentinel://h:26379/", "redis+sentinel:///name",
                "redis+sentinel://h:26379/a/b"):
        with pytest.raises(ConfigurationError):
            RedisSentinelBackplane(bad)


async def test_a_sentinel_that_accepts_and_stays_silent_fails_start_within_connect_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    await check_silent_host_fails_start(
        lambda port: backplane(f"redis+sentinel://127.0.0.1:{port}/mymaster",
                               connect_timeout=0.5), caplog)


@pytest.mark.timeout(120)
async def test_master_killed_deliveries_resume_on_promoted_replica(
        sentinel: SentinelSetup, caplog: pytest.LogCaptureFixture) -> None:
    bps = [backplane(sentinel.url), backplane(sentinel.url)]
    app_a, app_b = make_app(bps[0]), make_app(bps[1])
    async with app_a.serve() as la, app_b.serve() as lb:
        (a1,) = await open_clients(la.port, 1)
        (b1,) = await open_clients(lb.port, 1)
        try:
            for client in (a1, b1):
                await command(client, "sub news")
            master = sentinel.master()
            await eventually(lambda: numsub(master, "harpia:news") == 2, what="both subscribed")
            await a1.send_text("pub news before")
            await expect(a1, "before")
            await expect(b1, "before")

            master.kill()
            new = await asyncio.to_thread(sentinel.wait_promoted, master)
            assert new is not master
            got = await publish_until_received(a1, b1, "news", timeout=40)
            await eventually(lambda: numsub(new, "harpia:news") == 2, timeout=15,
                             what="both processes resubscribed on the promoted replica")
            await expect_after_failover(a1, b1, "news", got, 30)
            assert all(bp.connected and bp.stats["outages"] == 1 for bp in bps)
            assert any("lost Redis" in r.getMessage() for r in caplog.records)
        finally:
            close_all((a1, b1))
