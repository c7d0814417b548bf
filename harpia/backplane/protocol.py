"""What an app needs from a cross-process broker: the ``Backplane`` protocol."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

__all__ = ["Backplane", "Deliver"]

#: ``deliver(topic, frames)``: copy serialized server frames to the local subscribers.
Deliver = Callable[[str, bytes], object]


@runtime_checkable
class Backplane(Protocol):
    """What an app needs from a broker.  ``harpia(pubsub=obj)`` takes any object with these
    methods; ``RedisBackplane``, ``RedisClusterBackplane`` and
    ``RedisSentinelBackplane`` are the ones harpia ships.

    The app calls ``start`` when its first listener starts (on that listener's loop) and
    ``stop`` after its last listener stopped.  ``subscribe`` / ``unsubscribe`` are called
    when a topic gains its first / loses its last local subscriber (before ``start`` too:
    remember them), ``publish`` after every local publish.  The three are plain calls on the
    loop: they must not block (queue the work and do it in a task).
    """

    async def start(self, deliver: Deliver, topics: Iterable[str]) -> None:
        """Connect, subscribe to ``topics`` (the local topics at this moment), and from now on
        call ``deliver(topic, frames)`` for every message published by *another* process:
        ``frames`` is one or more serialized, unmasked server frames (``serialize_frame``)."""

    async def stop(self) -> None:
        """Send what is queued (bounded wait), drop the subscriptions, disconnect."""

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview) -> None:
        """Forward a message this process published (and already delivered locally)."""

    def subscribe(self, topic: str) -> None:
        """``topic`` has a local subscriber now: receive what others publish to it."""

    def unsubscribe(self, topic: str) -> None:
        """``topic`` has no local subscriber any more."""
