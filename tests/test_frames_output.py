"""The output side: ``send`` results, backpressure and drain, ``close()``, the loop context (one
write per connection per loop turn), bound message handlers, ``publish``, and the module's
freedom from asyncio."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from frame_builder import (BINARY, CLOSE, PING, TEXT, cf, close_code_sent, close_payload,
                                 decode_frames, describe_output, normalize)

import harpia._frames as frames
from harpia._frames import (CLOSED, CLOSING, CONNECTING, OPEN, FrameEngine, is_valid_close_code,
                            serialize_frame, set_clock)
from harpia._loop import LoopContext
from harpia._publish import publish, publish_serialized


class FakeLoop:
    """``call_soon`` that queues callbacks; ``turn()`` runs them (one loop iteration)."""

    def __init__(self) -> None:
        self.queue: list[Callable[[], Any]] = []

    def call_soon(self, cb: Callable[[], Any]) -> None:
        self.queue.append(cb)

    def turn(self) -> None:
        queue, self.queue = self.queue, []
        for cb in queue:
            cb()


def attached(loop: FakeLoop | None = None, **kw: Any) -> tuple[FrameEngine, list[bytes], LoopContext]:
    loop = loop or FakeLoop()
    context = LoopContext(loop.call_soon)
    engine = FrameEngine(**kw)
    writes: list[bytes] = []
    engine.attach(writes.append, context)
    return engine, writes, context


# --------------------------------------------------------------------------- send

def test_ready_state_constants() -> None:
    assert (CONNECTING, OPEN, CLOSING, CLOSED) == (0, 1, 2, 3)
    assert FrameEngine().ready_state == OPEN


def test_send_returns_the_frame_size() -> None:
    engine = FrameEngine()
    assert engine.send("héllo") == 2 + 6
    assert engine.send(b"x" * 126) == 4 + 126
    assert engine.send(bytearray(70000)) == 10 + 70000
    assert engine.send(memoryview(b"")) == 2
    assert len(engine.data_to_send()) == 8 + 130 + 70010 + 2
    client = FrameEngine(client=True)
    assert client.send("a") == 2 + 4 + 1


def test_sends_after_close_are_dropped() -> None:
    engine = FrameEngine()
    engine.close()
    assert engine.send("late") == 0
    assert engine.send(b"late") == 0
    assert engine.ping() == 0
    assert engine.send_frame(TEXT, b"x") == 0
    assert engine.dropped == 4
    assert describe_output(engine.data_to_send(), masked=False) == [("close", 1000, "")]


@pytest.mark.parametrize("limit", [0, 1, 100, 1000, 5000])
def test_backpressure_limit(limit: int) -> None:
    engine = FrameEngine(backpressure_limit=limit)
    results = []
    while True:
        r = engine.send(b"x" * 98)               # 100-byte frames
        results.append(r)
        if r == -1:
            break
        assert r == 100
    # The send that takes the buffered amount past the limit is queued and returns -1.
    assert engine.buffered_amount == 100 * len(results) > limit
    assert engine.buffered_amount - 100 <= limit
    assert engine.reading_paused
    # Then every send is dropped and counted, whatever its size.
    assert engine.send(b"") == 0
    assert engine.send("y") == 0
    assert engine.send_text("y") == 0
    assert engine.send_binary(b"y") == 0
    assert engine.dropped == 4
    assert engine.events_received() == []
    # Taking the output drains the buffer: one drain event, then sends work again.
    assert len(engine.data_to_send()) == 100 * len(results)
    assert engine.events_received() == [("drain",)]
    assert not engine.reading_paused
    assert engine.send(b"z") == (3 if limit >= 3 else -1)
    engine.data_to_send()
    assert engine.events_received() == ([] if limit >= 3 else [("drain",)])


def test_drain_waits_for_the_low_water_mark() -> None:
    engine, writes, context = attached(backpressure_limit=1000)
    engine.pause_output(0)                         # the transport stops taking bytes
    for _ in range(100):                           # ~11 frames of 100 bytes cross 1000
        if engine.send(b"x" * 98) == -1:
            break
    else:
        pytest.fail("send never returned -1 over the backpressure limit")
    assert engine.events_received() == []
    assert writes == []                            # held while writing is paused
    assert engine.send(b"x") == 0                  # over the limit: dropped
    engine.resume_output(1000 // 4 + 1)            # written; the transport still holds 251
    assert len(writes) == 1
    assert engine.events_received() == []          # not down to the low-water mark yet
    assert engine.reading_paused
    assert engine.send(b"x") == 3                  # under the limit again: taken
    engine.flush_output()
    engine.pause_output(1000 // 4 + 1)
    engine.resume_output(1000 // 4)                # at the low-water mark (L // 4)
    assert engine.events_received() == [("drain",)]
    assert not engine.reading_paused
    engine.resume_output(0)
    assert engine.events_received() == []          # once


def test_reading_is_paused_and_resumed_through_the_hook() -> None:
    calls: list[bool] = []

    class Engine(FrameEngine):
        def set_reading(self, reading: bool) -> None:
            calls.append(reading)

    engine = Engine(backpressure_limit=10)
    engine.send(b"x" * 20)
    engine.send(b"x" * 20)
    assert calls == [False]
    engine.data_to_send()
    assert calls == [False, True]


def test_close_on_backpressure_limit() -> None:
    engine = FrameEngine(backpressure_limit=50, close_on_backpressure_limit=True)
    assert engine.send(b"x" * 60) == -1
    assert engine.ready_state == CLOSING
    frames_out = decode_frames(engine.data_to_send())
    assert [f.opcode for f in frames_out] == [BINARY, CLOSE]
    assert close_code_sent(b"".join(bytes([0x88, len(f.payload)]) + f.payload
                                    for f in frames_out[1:])) == 1013
    assert engine.events_received() == []          # no drain while closing


def test_transport_buffered_counts_towards_the_limit() -> None:
    engine = FrameEngine(backpressure_limit=100)
    engine.transport_buffered = 95
    assert engine.buffered_amount == 95
    assert engine.send(b"x" * 10) == -1


def test_negative_limits_are_refused() -> None:
    for kw in ("max_payload_length", "backpressure_limit", "inbound_limit"):
        with pytest.raises(ValueError):
            FrameEngine(**{kw: -1})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- close()

@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535, -1])
def test_close_refuses_codes_that_may_not_be_sent(code: int) -> None:
    engine = FrameEngine()
    with pytest.raises(ValueError):
        engine.close(code)
    assert engine.ready_state == OPEN
    assert engine.data_to_send() == b""


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1014, 3000, 4999])
def test_close_sends_the_code_and_reason(code: int) -> None:
    engine = FrameEngine()
    engine.close(code, "r€ason")
    assert engine.ready_state == CLOSING
    assert engine.close_code_sent == code
    assert describe_output(engine.data_to_send(), masked=False) == [("close", code, "r€ason")]


def test_close_reason_length() -> None:
    engine = FrameEngine()
    with pytest.raises(ValueError):
        engine.close(1000, "é" * 62)               # 124 bytes of UTF-8
    engine.close(1000, "é" * 61 + "a")             # 123
    assert describe_output(engine.data_to_send(), masked=False) == [
        ("close", 1000, "é" * 61 + "a")]


def test_close_twice_sends_one_frame() -> None:
    engine = FrameEngine(client=True)
    engine.close(1000)
    engine.close(1001)
    assert describe_output(engine.data_to_send(), masked=True) == [("close", 1000, "")]


def test_close_writes_at_once_when_attached() -> None:
    engine, writes, context = attached()
    engine.close(1001)
    assert [close_code_sent(w) for w in writes] == [1001]


def test_is_valid_close_code() -> None:
    valid = {c for c in range(70000) if is_valid_close_code(c)}
    assert valid == set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
    assert not is_valid_close_code(-1)


# --------------------------------------------------------------------------- the context

def test_sends_outside_feed_are_written_once_per_turn() -> None:
    loop = FakeLoop()
    engine, writes, context = attached(loop)
    engine.send("a")
    engine.send(b"b")
    engine.ping(b"p")
    assert writes == []
    assert len(loop.queue) == 1                    # the context scheduled itself once
    loop.turn()
    assert len(writes) == 1
    assert describe_output(writes[0], masked=False) == [("text", "a"), ("binary", b"b"),
                                                        ("ping", b"p")]
    loop.turn()
    assert len(writes) == 1
    engine.send("c")                               # next turn: scheduled again
    assert len(loop.queue) == 1
    loop.turn()
    assert len(writes) == 2


def test_one_loop_context_serves_many_engines() -> None:
    loop = FakeLoop()
    context = LoopContext(loop.call_soon)
    engines, writes = [], []
    for _ in range(5):
        e = FrameEngine()
        w: list[bytes] = []
        e.attach(w.append, context)
        engines.append(e)
        writes.append(w)
    for e in engines:
        e.send("x")
        e.send("y")
    assert len(loop.queue) == 1
    loop.turn()
    assert [len(w) for w in writes] == [1] * 5


def test_flush_output_writes_now() -> None:
    loop = FakeLoop()
    engine, writes, context = attached(loop)
    engine.send("a")
    engine.flush_output()
    assert len(writes) == 1
    loop.turn()
    assert len(writes) == 1


def test_a_failing_writer_does_not_starve_the_others() -> None:
    loop = FakeLoop()
    context = LoopContext(loop.call_soon)
    bad, good = FrameEngine(), FrameEngine()

    def broken(data: bytes) -> None:
        raise OSError("gone")

    out: list[bytes] = []
    bad.attach(broken, context)
    good.attach(out.append, context)
    bad.send("x")
    good.send("y")
    loop.turn()
    assert len(out) == 1
    assert normalize(bad.events_received()) == [("handler_error", OSError)]


def test_an_engine_that_flushed_and_sends_again_is_written_once_at_the_end_of_the_turn() -> None:
    loop = FakeLoop()
    context = LoopContext(loop.call_soon)
    engines, writes = [], []
    for _ in range(3):
        e = FrameEngine()
        w: list[bytes] = []
        e.attach(w.append, context)
        engines.append(e)
        writes.append(w)
    for e in engines:
        e.send("a")
    engines[1].flush_output()          # written now, yet still queued for the turn's end
    engines[1].send("b")
    engines[1].send("c")
    assert len(loop.queue) == 1
    loop.turn()
    assert [len(w) for w in writes] == [1, 2, 1]
    assert describe_output(writes[1][1], masked=False) == [("text", "b"), ("text", "c")]
    loop.turn()                        # nothing queued twice, nothing left over
    assert [len(w) for w in writes] == [1, 2, 1]
    for e in engines:                  # and every engine can be queued again
        e.send("d")
    loop.turn()
    assert [len(w) for w in writes] == [2, 3, 2]


def test_sends_made_while_the_turn_is_written_go_to_the_next_turn() -> None:
    loop = FakeLoop()
    context = LoopContext(loop.call_soon)
    first, second = FrameEngine(), FrameEngine()
    out: list[bytes] = []

    def writer(data: bytes) -> None:
        out.append(data)
        if len(out) == 1:
            first.send("again")        # first was written already, second not yet
            second.send("more")

    first.attach(writer, context)
    second.attach(out.append, context)
    first.send("x")
    second.send("y")
    loop.turn()
    assert [describe_output(d, masked=False) for d in out] == [
        [("text", "x")], [("text", "y"), ("text", "more")]]
    assert len(loop.queue) == 1
    loop.turn()
    assert describe_output(out[2], masked=False) == [("text", "again")]


def test_the_rest_of_a_turn_is_written_next_turn_if_handler_failed_raises() -> None:
    class Fragile(FrameEngine):
        def handler_failed(self, exc: BaseException) -> None:
            raise RuntimeError("the hook itself failed") from exc

    def broken(data: bytes) -> None:
        raise OSError("gone")

    loop = FakeLoop()
    context = LoopContext(loop.call_soon)
    bad, good, late = Fragile(), FrameEngine(), FrameEngine()
    out: list[bytes] = []
    bad.attach(broken, context)
    good.attach(out.append, context)
    late.attach(out.append, context)
    bad.send("x")
    good.send("y")
    with pytest.raises(RuntimeError):
        loop.turn()
    assert out == []
    late.send("z")                     # queued after the failed turn: after the rest
    assert len(loop.queue) == 1
    loop.turn()
    assert [describe_output(d, masked=False) for d in out] == [[("text", "y")], [("text", "z")]]


def test_large_sends_with_a_writer_keep_their_order() -> None:
    # Large frames may bypass the output buffer; the bytes written must still be in order.
    for writelines in (False, True):
        loop = FakeLoop()
        context = LoopContext(loop.call_soon)
        engine = FrameEngine(backpressure_limit=8 << 20)
        written: list[bytes] = []
        engine.attach(written.append, context,
                      writelines=written.extend if writelines else None)
        big = bytes(range(256)) * 1024
        engine.send("small")
        engine.send(big)
        engine.send("é" * 40000)
        engine.send(b"tail")
        loop.turn()
        assert describe_output(b"".join(written), masked=False) == [
            ("text", "small"), ("binary", big), ("text", "é" * 40000), ("binary", b"tail")]


def test_output_inside_feed_is_one_write_per_read() -> None:
    loop = FakeLoop()
    engine, writes, context = attached(loop)
    engine.bind_message_handler(lambda ws, m: ws.send(m), 2)
    data = b"".join(cf(TEXT if i % 2 else BINARY, f"m{i}".encode()) for i in range(16))
    engine.feed(data)
    assert len(writes) == 1                        # 16 echoes, one write
    assert loop.queue == []                        # and nothing left for the context
    assert describe_output(writes[0], masked=False) == [
        ("text" if i % 2 else "binary", f"m{i}" if i % 2 else f"m{i}".encode())
        for i in range(16)]


def test_pongs_and_close_inside_feed_are_one_write() -> None:
    loop = FakeLoop()
    engine, writes, context = attached(loop)
    engine.feed(cf(PING, b"1") + cf(PING, b"2") + cf(CLOSE, close_payload(1000)))
    assert len(writes) == 1
    assert describe_output(writes[0], masked=False) == [
        ("pong", b"1"), ("pong", b"2"), ("close", 1000, "")]


def test_detach_drops_output_and_closes() -> None:
    engine, writes, context = attached()
    engine.send("queued")
    engine.detach()
    assert engine.ready_state == CLOSED
    assert engine.send("x") == 0
    engine.feed(cf(TEXT, "ignored"))
    assert engine.events_received() == []
    assert writes == []


# --------------------------------------------------------------------------- bound handlers

def test_handler_arities() -> None:
    seen: list[tuple[Any, ...]] = []
    engine = FrameEngine()
    engine.bind_message_handler(lambda ws, m: seen.append((ws, m)), 2)
    engine.feed(cf(TEXT, "two"))
    engine.bind_message_handler(lambda ws: seen.append((ws,)), 1)
    engine.feed(cf(TEXT, "one"))
    engine.bind_message_handler(lambda: seen.append(()), 0)
    engine.feed(cf(BINARY, b"zero"))
    assert seen == [(engine, "two"), (engine,), ()]
    assert engine.events_received() == []
    engine.bind_message_handler(None)
    engine.feed(cf(TEXT, "event"))
    assert engine.events_received() == [("message", "event")]
    with pytest.raises(ValueError):
        engine.bind_message_handler(print, 3)


def test_handler_exception_leaves_the_connection_alone() -> None:
    engine = FrameEngine()
    seen: list[Any] = []

    def handler(ws: FrameEngine, m: Any) -> None:
        seen.append(m)
        if m == "boom":
            raise KeyError(m)

    engine.bind_message_handler(handler, 2)
    engine.feed(cf(TEXT, "boom") + cf(TEXT, "after") + cf(PING, b"p"))
    events = engine.events_received()
    assert events[0][0] == "handler_error" and isinstance(events[0][-1], KeyError)
    assert normalize(events) == [("handler_error", KeyError), ("ping", b"p")]
    assert seen == ["boom", "after"]
    assert engine.ready_state == OPEN
    assert describe_output(engine.data_to_send(), masked=False) == [("pong", b"p")]


def test_async_handler_needs_an_adapter() -> None:
    engine = FrameEngine()
    engine.bind_message_handler(lambda ws, m: None, 2, True)
    engine.feed(cf(TEXT, "x"))
    assert normalize(engine.events_received()) == [("handler_error", TypeError)]
    assert engine.ready_state == OPEN


def test_async_handler_pauses_delivery_until_resumed() -> None:
    pending: list[Any] = []

    class Adapter(FrameEngine):
        def start_async(self, awaitable: Any) -> bool:
            pending.append(awaitable)
            return True                            # still running

    engine = Adapter(inbound_limit=10)
    engine.bind_message_handler(lambda ws, m: m, 2, True)
    data = cf(TEXT, "1") + cf(TEXT, "2") + cf(TEXT, "3")
    engine.feed(data[:10])                         # "1" and half of "2"
    engine.feed(data[10:])
    assert pending == ["1"]
    assert engine.held_bytes == len(data) - len(cf(TEXT, "1"))
    assert engine.reading_paused                   # over inbound_limit
    engine.resume_delivery()
    assert pending == ["1", "2"]
    engine.resume_delivery()
    assert pending == ["1", "2", "3"]
    assert engine.held_bytes == 0
    assert not engine.reading_paused


# --------------------------------------------------------------------------- publish

def test_publish_copies_one_frame_to_each_subscriber() -> None:
    loop = FakeLoop()
    context = LoopContext(loop.call_soon)
    engines = [FrameEngine() for _ in range(4)]
    writes: list[list[bytes]] = [[] for _ in engines]
    for e, w in zip(engines, writes):
        e.attach(w.append, context)
    assert publish(tuple(engines), "héllo", exclude=engines[1]) == 3
    assert publish(tuple(engines), bytearray(b"\x00\x01")) == 4
    assert publish(tuple(engines), memoryview(b"m")) == 4
    assert len(loop.queue) == 1
    loop.turn()
    assert writes[1] == [serialize_frame(BINARY, b"\x00\x01") + serialize_frame(BINARY, b"m")]
    for i in (0, 2, 3):
        assert writes[i] == [serialize_frame(TEXT, "héllo") + serialize_frame(BINARY, b"\x00\x01")
                             + serialize_frame(BINARY, b"m")]


def test_publish_large_and_serialized() -> None:
    engines = (FrameEngine(backpressure_limit=1 << 21), FrameEngine(backpressure_limit=1 << 21))
    big = b"\xab" * 70000
    assert publish(engines, big) == 2
    assert publish_serialized(engines, serialize_frame(PING, b"x")) == 2
    for e in engines:
        assert describe_output(e.data_to_send(), masked=False) == [("binary", big),
                                                                   ("ping", b"x")]


def test_publish_counts_only_takers() -> None:
    closed, full, fine = FrameEngine(), FrameEngine(backpressure_limit=10), FrameEngine()
    closed.close()
    full.send(b"x" * 20)                           # over its limit already
    before = closed.dropped, full.dropped
    assert publish((closed, full, fine), "m") == 1
    assert (closed.dropped, full.dropped) == (before[0] + 1, before[1] + 1)
    # The subscriber whose buffer this message takes over its limit still counts.
    edge = FrameEngine(backpressure_limit=5)
    assert publish((edge,), "123456") == 1
    assert edge.send("x") == 0


def test_publish_empty_and_errors() -> None:
    assert publish((), "x") == 0
    with pytest.raises(TypeError):
        publish([FrameEngine()], "x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- module

def test_last_seen_follows_the_clock() -> None:
    previous = FrameEngine().last_seen            # a new engine is stamped with the clock
    try:
        set_clock(1234)
        engine = FrameEngine()
        assert engine.last_seen == 1234
        set_clock(2000)
        engine.feed(b"")
        assert engine.last_seen == 2000
    finally:
        set_clock(previous)


def test_importing_the_engine_does_not_import_asyncio() -> None:
    # harpia/__init__.py (the server API) imports asyncio, and that is not what this is
    # about: an empty stand-in for the package lets the engine, and any sibling extension
    # it needs, be imported without running it.
    package_dir = os.path.dirname(frames.__file__)
    code = (
        "import sys, types\n"
        "package = types.ModuleType('harpia')\n"
        f"package.__path__ = [{package_dir!r}]\n"
        "sys.modules['harpia'] = package\n"
        "import harpia._frames\n"
        "harpia._frames.FrameEngine().feed(b'\\x81\\x80abcd')\n"
        "assert 'asyncio' not in sys.modules, 'the frame engine imported asyncio'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- busy polling

def test_busy_poll_off_schedules_nothing_on_reads() -> None:
    loop = FakeLoop()
    engine, writes, context = attached(loop)
    engine.feed(cf(TEXT, b"hi"))
    assert loop.queue == []
    assert context.busy_poll == 0.0


def test_busy_poll_keeps_the_loop_turning_until_reads_stop() -> None:
    import time
    loop = FakeLoop()
    context = LoopContext(loop.call_soon, busy_poll=0.02)
    engine = FrameEngine()
    engine.attach(lambda data: None, context)
    engine.feed(cf(TEXT, b"hi"))
    assert len(loop.queue) == 1                    # the polling callback
    engine.feed(cf(TEXT, b"again"))
    assert len(loop.queue) == 1                    # already polling: not scheduled twice
    started = time.monotonic()
    turns = 0
    while loop.queue:
        loop.turn()
        turns += 1
        if turns == 50:                            # a read mid-way pushes the deadline on
            engine.feed(cf(TEXT, b"more"))
            pushed_at = time.monotonic()
        assert time.monotonic() - started < 5, "polling never stopped"
    assert turns > 50
    # It stops one window after the last read, not before.
    assert time.monotonic() - pushed_at >= 0.02
    engine.feed(cf(TEXT, b"later"))                # a read after it stopped starts it again
    assert len(loop.queue) == 1


def test_note_activity_starts_polling_only_when_enabled() -> None:
    loop = FakeLoop()
    LoopContext(loop.call_soon).note_activity()
    assert loop.queue == []
    LoopContext(loop.call_soon, busy_poll=0.001).note_activity()
    assert len(loop.queue) == 1


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_busy_poll_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        LoopContext(FakeLoop().call_soon, busy_poll=bad)
