"""``RedisSentinelBackplane``: one Redis master found through Sentinel, followed across failovers."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .single import RedisBackplane
from .urls import parse_multi_host

__all__ = ["RedisSentinelBackplane"]


class RedisSentinelBackplane(RedisBackplane):
    """``harpia(pubsub="redis+sentinel://host:26379[,host:port...]/service_name")``.

    The same backplane as ``RedisBackplane`` (one channel per topic, ``PUBLISH`` /
    ``SUBSCRIBE`` on one master), with the master's address asked from the sentinels at every
    connection (redis-py's ``Sentinel.master_for``).  When the master fails, the subscribing
    connection breaks; the backplane treats it as an outage (local delivery only, a
    ``WARNING``), reconnects with backoff, and lands on whichever server the sentinels name as
    master, as soon as they have promoted a replica; then it resubscribes every channel the
    process needs in one command.  Messages published between the failure and the
    resubscription are lost for the other processes (pub/sub keeps nothing): at most once.
    ``max_backoff`` defaults to 1 s here (5 s for ``RedisBackplane``), so that the new master
    is found within a second of its promotion.

    The URL's user and password (``redis+sentinel://:secret@host:26379/name``) are for the
    Redis servers; ``sentinel_options={"password": ...}`` passes options to the sentinel
    connections themselves.  Other keyword arguments are those of ``RedisBackplane``.
    """

    SCHEMES = ("redis+sentinel",)

    def __init__(self, url: str, *, sentinel_options: dict[str, Any] | None = None,
                 **options: Any) -> None:
        self.sentinel_options = dict(sentinel_options or {})
        # A failover is an expected event here, over in seconds: retry at least every second
        # rather than backing off to RedisBackplane's 5 s.
        options.setdefault("max_backoff", 1.0)
        super().__init__(url, **options)

    def _check_url(self, url: str) -> None:
        parsed = parse_multi_host(url, self.SCHEMES, 26379,
                                  "redis+sentinel://host:26379[,host:port...]/service_name")
        service = parsed.path.strip("/")
        if not service or "/" in service:
            raise ConfigurationError(
                f"pubsub URL {url!r} must end with the Sentinel service name, as in "
                "'redis+sentinel://host:26379/mymaster'")
        self.sentinels = parsed.hosts
        self.service_name = service
        self._auth = {key: value for key, value in
                      (("username", parsed.username), ("password", parsed.password)) if value}

    def __repr__(self) -> str:
        state = "up" if self._up else ("stopped" if self._loop is None else "down")
        return (f"<RedisSentinelBackplane {self.service_name} via {len(self.sentinels)} "
                f"sentinel(s) {state}, {len(self._wanted)} topic(s)>")

    def _make_clients(self, options: dict[str, Any]) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.asyncio.sentinel import Sentinel
        from redis.backoff import NoBackoff

        sentinel_options = {"socket_connect_timeout": self.connect_timeout,
                            **self.sentinel_options}
        sentinel = Sentinel(self.sentinels, sentinel_kwargs=sentinel_options)
        options = {**self._auth, **options}
        # As with one server: the publisher retries once, the subscriber never (a broken
        # subscription is an outage the supervisor handles, with the master asked anew).
        self._pub_client = sentinel.master_for(
            self.service_name, redis_class=aioredis.Redis, retry=Retry(NoBackoff(), 1), **options)
        self._sub_client = sentinel.master_for(
            self.service_name, redis_class=aioredis.Redis, retry=Retry(NoBackoff(), 0), **options)
