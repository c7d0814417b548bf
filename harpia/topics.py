"""Pub/sub topics and the set of open connections of one app.

Both are dicts used as ordered sets (O(1) add and remove) with a cached tuple snapshot:
a publish or a ``for client in connections`` loop walks the snapshot, so a connection that
closes (or subscribes) meanwhile cannot break the iteration, and the snapshot is rebuilt
only after the membership changed — not per publish.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from . import _frames

__all__ = ["TopicRegistry", "ConnectionSet"]

C = TypeVar("C")


class ConnectionSet(Generic[C]):
    """A live view of the open connections: iterable, sized, safe to iterate while they
    open and close."""

    __slots__ = ("_members", "_snapshot")

    def __init__(self) -> None:
        self._members: dict[C, None] = {}
        self._snapshot: tuple[C, ...] | None = ()

    def add(self, member: C) -> None:
        self._members[member] = None
        self._snapshot = None

    def discard(self, member: C) -> None:
        if self._members.pop(member, 0) is None:
            self._snapshot = None

    def snapshot(self) -> tuple[C, ...]:
        snap = self._snapshot
        if snap is None:
            snap = self._snapshot = tuple(self._members)
        return snap

    def __iter__(self) -> Iterator[C]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def forEach(self, callback: Callable[[C], Any]) -> None:  # noqa: N802 - Bun's name
        """Call ``callback(client)`` for each open connection (Bun's spelling)."""
        for member in self.snapshot():
            callback(member)

    for_each = forEach

    def __repr__(self) -> str:
        return f"<ConnectionSet of {len(self._members)}>"


class TopicRegistry:
    """Topic name -> subscribers.  A publish serializes the frame once (in the engine) and
    copies the same bytes into every subscriber's output buffer."""

    __slots__ = ("_topics", "on_first_subscriber", "on_last_subscriber")

    def __init__(self) -> None:
        self._topics: dict[str, ConnectionSet[Any]] = {}
        # The backplane listens here to subscribe to a broker channel only while some
        # local connection wants the topic.
        self.on_first_subscriber: Callable[[str], None] | None = None
        self.on_last_subscriber: Callable[[str], None] | None = None

    def subscribe(self, topic: str, member: Any) -> bool:
        subscribers = self._topics.get(topic)
        if subscribers is None:
            subscribers = self._topics[topic] = ConnectionSet()
            if self.on_first_subscriber is not None:
                self.on_first_subscriber(topic)
        elif member in subscribers:
            return False
        subscribers.add(member)
        return True

    def unsubscribe(self, topic: str, member: Any) -> bool:
        subscribers = self._topics.get(topic)
        if subscribers is None or member not in subscribers:
            return False
        subscribers.discard(member)
        if not subscribers:
            del self._topics[topic]
            if self.on_last_subscriber is not None:
                self.on_last_subscriber(topic)
        return True

    def subscriber_count(self, topic: str) -> int:
        subscribers = self._topics.get(topic)
        return 0 if subscribers is None else len(subscribers)

    def topics(self) -> list[str]:
        return list(self._topics)

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                exclude: Any = None, compress: bool | None = None) -> int:
        """Deliver to this process's subscribers; returns how many took the message."""
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return 0
        return _frames.publish(subscribers.snapshot(), message, exclude, compress)

    def publish_serialized(self, topic: str, frame: bytes) -> int:
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return 0
        return _frames.publish_serialized(subscribers.snapshot(), frame, None)
