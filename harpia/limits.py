"""Abuse controls, off by default: connections per client address, messages per second.

* ``harpia(max_connections_per_ip=N)``: the WebSocket connections one address may hold
  open in this process; over it an upgrade is answered ``429`` with ``Retry-After``.  The
  address is the client's as harpia knows it: the PROXY protocol's or a trusted proxy's
  ``X-Forwarded-For`` when those are on, else the TCP peer.
* route option ``max_messages_per_second=N`` (burst ``max_messages_burst``, default N):
  a token bucket per connection counting every frame that reaches the application —
  messages, pings and pongs; a client over it is closed with 1008 (policy violation).
  Only routes that set it pay for it: the check wraps that route's message handler.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["ConnectionsPerAddress", "MessageRate", "limit_message_rate", "rate_limited_handler"]

#: The close code and reason for a client over its message rate.
RATE_CLOSE_CODE = 1008
RATE_CLOSE_REASON = "message rate limit exceeded"


class ConnectionsPerAddress:
    """Open WebSocket connections per client host, for ``max_connections_per_ip``."""

    __slots__ = ("limit", "counts")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    def full(self, host: str) -> bool:
        return self.counts.get(host, 0) >= self.limit

    def add(self, host: str) -> None:
        self.counts[host] = self.counts.get(host, 0) + 1

    def remove(self, host: str) -> None:
        left = self.counts.get(host, 0) - 1
        if left > 0:
            self.counts[host] = left
        else:
            self.counts.pop(host, None)


class MessageRate:
    """A token bucket: ``rate`` frames a second on average, ``burst`` at once."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Count one frame; False once the client is over its rate."""
        now = time.monotonic()
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


async def _dropped() -> None:
    """What a rate-limited async handler returns for a message it drops."""


def rate_limited_handler(fn: Callable[..., Any], arity: int, is_async: bool,
                         bucket: MessageRate) -> Callable[[Any, Any], Any]:
    """The route's message handler behind ``bucket``: over the rate, close with 1008 and
    drop the message.  Always called with ``(ws, message)``."""

    def message(engine: Any, data: Any) -> Any:
        if not bucket.take():
            over_rate(engine)
            return _dropped() if is_async else None
        if arity == 2:
            return fn(engine, data)
        return fn(engine) if arity == 1 else fn()

    return message


def limit_message_rate(engine: Any, handler: Any, options: Any) -> MessageRate:
    """Put the route's message handler (a bound handler or None) behind a new bucket."""
    rate = options.max_messages_per_second
    bucket = MessageRate(rate, options.max_messages_burst or max(1.0, rate))
    if handler is None:
        fn, arity, is_async = _ignore, 0, False
    else:
        fn, arity, is_async = handler.fn, handler.arity, handler.is_async
    engine.bind_message_handler(rate_limited_handler(fn, arity, is_async, bucket), 2, is_async)
    return bucket


def _ignore() -> None:
    """The message handler of a route that has none."""


def over_rate(ws: Any) -> None:
    if ws.ready_state == 1:
        ws.close(RATE_CLOSE_CODE, RATE_CLOSE_REASON)
