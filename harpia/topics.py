"""Pub/sub topics and the set of open connections of one app.

Both are dicts used as ordered sets (O(1) add and remove) with a cached tuple snapshot:
a publish or a ``for client in connections`` loop walks the snapshot, so a connection that
closes (or subscribes) meanwhile cannot break the iteration, and the snapshot is rebuilt
only after the membership changed — not per publish.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from . import _publish

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


#: Topics unsubscribed per loop turn when a connection with many subscriptions goes
#: away: about a millisecond of work, so a close never stalls the other connections.
UNSUBSCRIBE_BATCH = 1024


class TopicRegistry:
    """Topic name -> subscribers.  A publish serializes the frame once (in the engine) and
    copies the same bytes into every subscriber's output buffer.

    A topic with one subscriber (a private room, a client-named topic) maps to that
    subscriber itself; a ``ConnectionSet`` is made when a second one joins.  Most topics
    of an app that lets clients name them have one subscriber, and the set costs ~300
    bytes more per topic."""

    __slots__ = ("_topics", "subscriptions", "on_first_subscriber", "on_last_subscriber")

    def __init__(self) -> None:
        self._topics: dict[str, Any] = {}
        #: Subscriptions in all, over every topic (kept as they change: O(1) to read).
        self.subscriptions = 0
        # The backplane listens here to subscribe to a broker channel only while some
        # local connection wants the topic.
        self.on_first_subscriber: Callable[[str], None] | None = None
        self.on_last_subscriber: Callable[[str], None] | None = None

    def subscribe(self, topic: str, member: Any) -> bool:
        topics = self._topics
        subscribers = topics.get(topic)
        if subscribers is None:
            topics[topic] = member
            self.subscriptions += 1
            if self.on_first_subscriber is not None:
                self.on_first_subscriber(topic)
            return True
        if type(subscribers) is not ConnectionSet:
            if subscribers is member:
                return False
            first = subscribers
            subscribers = topics[topic] = ConnectionSet()
            subscribers.add(first)
        elif member in subscribers:
            return False
        subscribers.add(member)
        self.subscriptions += 1
        return True

    def unsubscribe(self, topic: str, member: Any) -> bool:
        topics = self._topics
        subscribers = topics.get(topic)
        if subscribers is None:
            return False
        if type(subscribers) is ConnectionSet:
            if member not in subscribers:
                return False
            subscribers.discard(member)
            self.subscriptions -= 1
            if len(subscribers) == 1:
                topics[topic] = next(iter(subscribers))
            return True
        if subscribers is not member:
            return False
        del topics[topic]
        self.subscriptions -= 1
        if self.on_last_subscriber is not None:
            self.on_last_subscriber(topic)
        return True

    def unsubscribe_all(self, topics: set[str], member: Any,
                        call_soon: Callable[..., Any]) -> None:
        """Remove ``member`` from every topic of ``topics`` (which is consumed): up to
        ``UNSUBSCRIBE_BATCH`` now, the rest in later loop turns via ``call_soon``."""
        unsubscribe = self.unsubscribe
        for _ in range(min(len(topics), UNSUBSCRIBE_BATCH)):
            unsubscribe(topics.pop(), member)
        if topics:
            call_soon(self.unsubscribe_all, topics, member, call_soon)

    def subscriber_count(self, topic: str) -> int:
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return 0
        return len(subscribers) if type(subscribers) is ConnectionSet else 1

    def topics(self) -> list[str]:
        return list(self._topics)

    def topic_count(self) -> int:
        return len(self._topics)

    def first_topics(self, limit: int) -> dict[str, int]:
        """Subscribers of at most ``limit`` topics (the oldest): bounded work and output
        however many topics clients made."""
        count = self.subscriber_count
        return {topic: count(topic) for topic in itertools.islice(self._topics, limit)}

    def _snapshot(self, topic: str) -> tuple[Any, ...] | None:
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return None
        if type(subscribers) is ConnectionSet:
            return subscribers.snapshot()
        return (subscribers,)

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                exclude: Any = None, compress: bool | None = None) -> int:
        """Deliver to this process's subscribers; returns how many took the message."""
        subscribers = self._snapshot(topic)
        if subscribers is None:
            return 0
        return _publish.publish(subscribers, message, exclude, compress)

    def publish_serialized(self, topic: str, frame: bytes) -> int:
        subscribers = self._snapshot(topic)
        if subscribers is None:
            return 0
        return _publish.publish_serialized(subscribers, frame, None)
