"""harpia._counters: the engine counters of closed connections add up in C to what each
engine counted."""
from __future__ import annotations

import pytest
from frame_builder import BINARY, TEXT, cf

from harpia._counters import ClosedTotals
from harpia._frames import FrameEngine

NAMES = ("messages_in", "messages_out", "bytes_in", "bytes_out", "backpressure_events",
         "dropped")


def engine_with_traffic(messages: int) -> FrameEngine:
    engine = FrameEngine(backpressure_limit=64)
    for i in range(messages):
        engine.feed(cf(TEXT if i % 2 else BINARY, b"x" * (i + 1)))
        engine.send(b"y" * 40)             # two of these cross the 64-byte limit
    return engine


def test_the_sums_are_the_engines_counters_added() -> None:
    engines = [engine_with_traffic(n) for n in (0, 1, 3, 5)]
    totals = ClosedTotals()
    for engine in engines:
        totals.add(engine)
    for name in NAMES:
        assert getattr(totals, name) == sum(getattr(e, name) for e in engines), name
    assert totals.messages_in > 0 and totals.bytes_in > totals.messages_in
    assert totals.backpressure_events > 0 and totals.dropped > 0


def test_only_an_engine_is_added() -> None:
    with pytest.raises(TypeError):
        ClosedTotals().add(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ClosedTotals().add(object())  # type: ignore[arg-type]
