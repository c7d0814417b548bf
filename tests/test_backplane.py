"""The pub/sub backplane against a real Redis: delivery across processes exactly once,
subscriptions that follow the local subscribers, broker faults, and the plug-in protocol.

Every test that needs Redis starts its own ``redis-server`` (``tests/redis_server.py``); if
the binary is missing they fail, they do not skip.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis_server import RedisServer, free_port, redis_server  # noqa: F401 - a fixture
from wsclient import BINARY, RawClient

from harpia import App, BackplaneError, ConfigurationError, harpia
from harpia._frames import serialize_frame
from harpia.backplane import MAGIC, Backplane, RedisBackplane, decode_envelope, encode_envelope

HERE = Path(__file__).resolve().parent


def make_app(pubsub: object) -> App:
    """An app driven by text commands from its clients (also run as a separate process):
    ``sub T...``, ``unsub T...`` (answered with ``ok``), ``pub T PAYLOAD`` (app.publish),
    ``wspub T PAYLOAD`` (ws.publish: not to the sender), ``bin T HEX``, ``burst T N``."""
    app = harpia(pubsub=pubsub)

    def message(ws: Any, text: str | bytes) -> None:
        assert isinstance(text, str)
        command, _, rest = text.partition(" ")
        if command == "sub":
            for topic in rest.split():
                ws.subscribe(topic)
            ws.send("ok")
        elif command == "unsub":
            for topic in rest.split():
                ws.unsubscribe(topic)
            ws.send("ok")
        elif command == "pub":
            topic, _, payload = rest.partition(" ")
            app.publish(topic, payload)
        elif command == "wspub":
            topic, _, payload = rest.partition(" ")
            ws.publish(topic, payload)
        elif command == "bin":
            topic, _, payload = rest.partition(" ")
            app.publish(topic, bytes.fromhex(payload))
        elif command == "burst":
            topic, _, count = rest.partition(" ")
            for i in range(int(count)):
                app.publish(topic, f"{topic}-{i}")

    app.ws("/", {"message": message})
    return app


SERVER_SCRIPT = """
import asyncio, signal, sys
sys.path.insert(0, {tests!r})
from test_backplane import make_app
from harpia.server import run

app = make_app(sys.argv[1])

async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.serve(port=0) as server:
        print("PORT", server.port, flush=True)
        await stop.wait()

run(main())
"""


B = TypeVar("B", bound=RedisBackplane)


def fast_backplane(kind: type[B], url: str, **options: Any) -> B:
    """Fast reconnects for the tests (the defaults are for production)."""
    options.setdefault("min_backoff", 0.02)
    options.setdefault("max_backoff", 0.2)
    return kind(url, **options)


def backplane(url: str, **options: Any) -> RedisBackplane:
    return fast_backplane(RedisBackplane, url, **options)


async def eventually(check: Callable[[], Any], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` (it runs blocking Redis calls in a thread) until it is truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


async def command(client: RawClient, text: str) -> None:
    """Send ``sub``/``unsub`` and wait for the server's ``ok``."""
    await client.send_text(text)
    assert await client.recv_message() == "ok"


async def expect(client: RawClient, *messages: str | bytes, quiet: float = 0.0) -> None:
    """The next messages are exactly these, in order; then nothing for ``quiet`` seconds."""
    for message in messages:
        assert await client.recv_message() == message
    if quiet:
        with pytest.raises(asyncio.TimeoutError):
            got = await client.recv_message(timeout=quiet)
            raise AssertionError(f"unexpected message {got!r}")


async def open_clients(port: int, n: int) -> list[RawClient]:
    return list(await asyncio.gather(*(RawClient.open(port) for _ in range(n))))


def close_all(clients: Iterable[RawClient]) -> None:
    for client in clients:
        client.close()


# ---------------------------------------------------------------- two processes


class ServerProcess:
    def __init__(self, url: str, log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT.format(tests=str(HERE)), url],
            stdout=subprocess.PIPE, stderr=self.log)
        self.port = 0

    async def ready(self) -> int:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 20)
        assert line.startswith(b"PORT "), line
        self.port = int(line.split()[1])
        return self.port

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        self.log.close()
        return code


@contextmanager
def server_processes(url: str, tmp_path: Path, count: int = 2) -> Iterator[list[ServerProcess]]:
    """``count`` servers, each in a process of its own with ``pubsub=url``; on the way out
    each is stopped and must have exited with 0, logging no traceback."""
    servers = [ServerProcess(url, tmp_path / f"server{i}.log") for i in range(count)]
    try:
        yield servers
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0] * count, [p.read_text() for p in tmp_path.glob("*.log")]
    for log in tmp_path.glob("*.log"):
        assert "Traceback" not in log.read_text()


async def test_two_processes_deliver_exactly_once(redis_server: RedisServer, tmp_path: Path) -> None:
    with server_processes(redis_server.url, tmp_path) as servers:
        await deliver_exactly_once(redis_server, servers)


async def deliver_exactly_once(redis_server: RedisServer, servers: list[ServerProcess]) -> None:
    clients: list[RawClient] = []
    try:
        port_a, port_b = await asyncio.gather(*(s.ready() for s in servers))
        a1, a2, a3 = await open_clients(port_a, 3)
        b1, b2 = await open_clients(port_b, 2)
        clients = [a1, a2, a3, b1, b2]
        for client in (a1, a2, b1, b2):
            await command(client, "sub news")
        await command(a3, "sub other")
        await eventually(lambda: redis_server.numsub("harpia:news", "harpia:other")
                         == {"harpia:news": 2, "harpia:other": 1}, what="both processes subscribed")

        # app.publish on A: every subscriber of both processes, once; not a3.
        await a1.send_text("pub news hello")
        for client in (a1, a2, b1, b2):
            await expect(client, "hello")
        # ws.publish on B: everyone but the sender, once; binary stays binary.
        await b1.send_text("wspub news from-b")
        await b1.send_text("bin news 00ff10")
        for client in (a1, a2, b2):
            await expect(client, "from-b", b"\x00\xff\x10")
        await expect(b1, b"\x00\xff\x10")
        # A burst from one process arrives in order, each message once.
        await a2.send_text("burst news 300")
        burst = [f"news-{i}" for i in range(300)]
        for client in (a1, a2, b1, b2):
            await expect(client, *burst)
        await asyncio.gather(*(expect(c, quiet=0.3) for c in clients))
    finally:
        close_all(clients)


# ---------------------------------------------------------------- subscriptions follow clients


async def test_subscription_churn_leaves_no_stale_channels(redis_server: RedisServer) -> None:
    apps = [make_app(backplane(redis_server.url)) for _ in range(2)]
    rng = random.Random(6455)
    topics = [f"t{i}" for i in range(12)]
    async with apps[0].serve() as la, apps[1].serve() as lb:
        ports = [la.port, lb.port]
        clients = [await RawClient.open(ports[i % 2]) for i in range(16)]
        homes = [i % 2 for i in range(16)]
        for _ in range(160):
            i = rng.randrange(len(clients))
            roll = rng.random()
            if roll < 0.08:  # drop the connection (with or without a close frame), come back
                if roll < 0.04:
                    clients[i].reset()
                else:
                    await clients[i].send_close(1000)
                    await clients[i].recv_close()
                    clients[i].close()
                clients[i] = await RawClient.open(ports[homes[i]])
                continue
            picked = " ".join(rng.sample(topics, rng.randint(1, 4)))
            await command(clients[i], ("sub " if roll < 0.55 else "unsub ") + picked)

        def in_line() -> bool:
            expected = {f"harpia:{t}": sum(app.websocket.subscriber_count(t) > 0 for app in apps)
                        for t in topics}
            live = redis_server.channels("harpia:*")
            counts = redis_server.numsub(*expected)
            return live == {c for c, n in expected.items() if n} and counts == expected

        await eventually(in_line, what="Redis channels == topics with local subscribers")
        assert redis_server.channels("harpia:*"), "the churn should leave some subscriptions"

        # Many first subscriptions in one loop turn go out as one SUBSCRIBE command.
        def subscribe_calls() -> int:
            info = redis_server.command("INFO", "commandstats")
            assert isinstance(info, dict)
            return int(info.get("cmdstat_subscribe", {}).get("calls", 0))

        before = await asyncio.to_thread(subscribe_calls)
        many = [f"bulk{i}" for i in range(300)]
        await command(clients[0], "sub " + " ".join(many))
        await eventually(lambda: len(redis_server.channels("harpia:bulk*")) == 300)
        assert await asyncio.to_thread(subscribe_calls) == before + 1

        for client in clients:
            client.reset()
        await eventually(lambda: not redis_server.channels("*"), what="no channel left")
        assert apps[0].hub.backplane is not None
        assert not apps[0].hub.topics.topics() and not apps[1].hub.topics.topics()


# ---------------------------------------------------------------- broker faults


async def test_redis_restart_mid_run_resumes_delivery(redis_server: RedisServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    bps = [backplane(redis_server.url), backplane(redis_server.url)]
    app_a, app_b = make_app(bps[0]), make_app(bps[1])
    async with app_a.serve() as la, app_b.serve() as lb:
        a1, a2 = await open_clients(la.port, 2)
        (b1,) = await open_clients(lb.port, 1)
        for client in (a1, a2, b1):
            await command(client, "sub news")
        await eventually(lambda: redis_server.numsub("harpia:news") == {"harpia:news": 2})
        await a1.send_text("pub news one")
        for client in (a1, a2, b1):
            await expect(client, "one")

        redis_server.kill()
        await a1.send_text("pub news two")  # local delivery goes on without the broker
        await expect(a1, "two")
        await expect(a2, "two")
        await eventually(lambda: not bps[0].connected and not bps[1].connected, what="outage seen")
        # Connections come and subscribe meanwhile; nothing else breaks.
        (b2,) = await open_clients(lb.port, 1)
        await command(b2, "sub news late")
        await a2.send_text("pub news three")
        await expect(a1, "three")
        await expect(a2, "three")

        redis_server.launch()  # same port: delivery resumes, harpia is not restarted
        await eventually(lambda: bps[0].connected and bps[1].connected, what="reconnected")
        await eventually(lambda: redis_server.numsub("harpia:news", "harpia:late")
                         == {"harpia:news": 2, "harpia:late": 1}, what="resubscribed")
        await a1.send_text("pub news four")
        for client in (a1, a2):
            await expect(client, "four")
        await expect(b1, "four", quiet=0.2)  # "two" and "three" were never replayed
        await expect(b2, "four")
        await b2.send_text("pub late five")
        await expect(b2, "five")
        close_all((a1, a2, b1, b2))

    lost = [r for r in caplog.records if "lost Redis" in r.getMessage()]
    back = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(lost) == 2 and len(back) == 2, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.WARNING for r in lost)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bps[0].stats["outages"] == 1 and bps[1].stats["outages"] == 1


async def test_a_silent_broker_is_noticed_by_ping(redis_server: RedisServer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    bp = backplane(redis_server.url, ping_interval=0.2, socket_timeout=0.5, connect_timeout=0.5)
    app = make_app(bp)
    async with app.serve() as listener:
        c1, c2 = await open_clients(listener.port, 2)
        for client in (c1, c2):
            await command(client, "sub news")
        await eventually(lambda: redis_server.numsub("harpia:news") == {"harpia:news": 1})
        redis_server.pause()  # no error, no close: only silence
        try:
            await eventually(lambda: not bp.connected, what="the silence noticed")
            await c1.send_text("pub news local")
            await expect(c1, "local")
            await expect(c2, "local")
        finally:
            redis_server.resume()
        await eventually(lambda: bp.connected, what="reconnected")
        await eventually(lambda: redis_server.numsub("harpia:news") == {"harpia:news": 1})
        await asyncio.to_thread(redis_server.command, "PUBLISH", "harpia:news", "back")
        await expect(c1, "back")
        await expect(c2, "back")
        close_all((c1, c2))
    assert len([r for r in caplog.records if "lost Redis" in r.getMessage()]) == 1


async def test_redis_down_at_start_is_a_clear_error() -> None:
    port = free_port()
    app = make_app(backplane(f"redis://127.0.0.1:{port}/0", connect_timeout=2))
    started = time.monotonic()
    with pytest.raises(BackplaneError, match=f"cannot reach Redis at redis://127.0.0.1:{port}/0"):
        async with app.serve():
            pass
    assert time.monotonic() - started < 3
    assert not app.hub.servers and app.hub.topics.on_first_subscriber is None
    assert not app.hub.backplane_running  # a later start tries again


class SilentHost:
    """A real TCP server that accepts every connection, reads what comes, and answers
    nothing (a stopped Redis, a wrong service on the port)."""

    def __init__(self) -> None:
        self.accepted = 0
        self._held: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SilentHost:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self._held.append(writer)
            while await reader.read(65536):
                pass

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._held:
            writer.close()
        await self._server.wait_closed()


async def check_silent_host_fails_start(make: Callable[[int], RedisBackplane],
                                        caplog: pytest.LogCaptureFixture) -> None:
    """``make(port)``, a backplane with ``connect_timeout=0.5`` for a host on ``port``,
    fails the app's start against a host that accepts and answers nothing: a clear error,
    logged, within the bound."""
    async with SilentHost() as silent:
        bp = make(silent.port)
        app = make_app(bp)
        started = time.monotonic()
        with pytest.raises(BackplaneError, match=rf"cannot reach Redis at {re.escape(bp.where)}: "
                                                 r"no answer within connect_timeout \(0.5 s\)"):
            async with app.serve():
                pass
        # Bounded by connect_timeout (not hung, nor left to the client library's own read
        # timeout), and the TCP connection was made: it is the handshake that waited.
        assert time.monotonic() - started < 4
        assert silent.accepted >= 1
    logged = [r for r in caplog.records if r.name == "harpia" and r.levelno == logging.ERROR]
    assert any("no answer within connect_timeout" in r.getMessage() for r in logged), logged
    assert not app.hub.servers and not app.hub.backplane_running


async def test_a_host_that_accepts_and_stays_silent_fails_start_within_connect_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    await check_silent_host_fails_start(
        lambda port: backplane(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5), caplog)


async def test_a_silent_host_while_reconnecting_is_retried_not_waited_on(
        redis_server: RedisServer) -> None:
    # The same bound once serving: a Redis that comes back stopped (it accepts, says nothing)
    # is retried with backoff, and the backplane is up again as soon as it answers.
    bp = backplane(redis_server.url, connect_timeout=0.5, ping_interval=0.2, socket_timeout=0.5)
    app = make_app(bp)
    async with app.serve() as listener:
        (c1,) = await open_clients(listener.port, 1)
        await command(c1, "sub news")
        redis_server.pause()
        try:
            await eventually(lambda: not bp.connected, what="the silence noticed")
            await asyncio.sleep(1.5)  # several bounded attempts against the silent host
            assert not bp.connected
        finally:
            redis_server.resume()
        await eventually(lambda: bp.connected, timeout=15, what="reconnected after the silence")
        await eventually(lambda: redis_server.numsub("harpia:news") == {"harpia:news": 1})
        await asyncio.to_thread(redis_server.command, "PUBLISH", "harpia:news", "back")
        await expect(c1, "back")
        close_all((c1,))


async def test_a_short_connect_timeout_still_connects_to_a_real_redis(
        redis_server: RedisServer) -> None:
    bp = backplane(redis_server.url, connect_timeout=2.0)
    app = make_app(bp)
    async with app.serve() as listener:
        assert bp.connected
        c1, c2 = await open_clients(listener.port, 2)
        for client in (c1, c2):
            await command(client, "sub news")
        await eventually(lambda: redis_server.numsub("harpia:news") == {"harpia:news": 1})
        await asyncio.to_thread(redis_server.command, "PUBLISH", "harpia:news", "from redis")
        await expect(c1, "from redis")
        await expect(c2, "from redis")
        close_all((c1, c2))


async def test_retry_at_start_serves_locally_until_redis_comes() -> None:
    server = RedisServer(free_port())
    bp = backplane(server.url, retry_at_start=True)
    app = make_app(bp)
    try:
        async with app.serve() as listener:
            assert not bp.connected
            c1, c2 = await open_clients(listener.port, 2)
            for client in (c1, c2):
                await command(client, "sub news")
            await c1.send_text("pub news local")
            await expect(c1, "local")
            await expect(c2, "local")
            await asyncio.to_thread(server.launch)
            await eventually(lambda: bp.connected, what="connected")
            await eventually(lambda: server.numsub("harpia:news") == {"harpia:news": 1})
            await asyncio.to_thread(server.command, "PUBLISH", "harpia:news", "from redis")
            await expect(c1, "from redis")
            close_all((c1, c2))
    finally:
        server.stop()


# ---------------------------------------------------------------- the wire


async def test_other_publishers_and_the_envelope(redis_server: RedisServer) -> None:
    bp = backplane(redis_server.url, channel_prefix="chat/")
    app = make_app(bp)
    async with app.serve() as listener:
        (client,) = await open_clients(listener.port, 1)
        await command(client, "sub room")
        await eventually(lambda: redis_server.numsub("chat/room") == {"chat/room": 1})
        # Not an envelope: one message, text when it is UTF-8, else binary.
        await asyncio.to_thread(redis_server.command, "PUBLISH", "chat/room", "plain text")
        await asyncio.to_thread(redis_server.command, "PUBLISH", "chat/room", b"\xff\xfe")
        await expect(client, "plain text", b"\xff\xfe")
        # An envelope from another process: its records, in order; a malformed one is dropped.
        envelope = encode_envelope(b"12345678", ["a", b"\x01", "c"])
        await asyncio.to_thread(redis_server.command, "PUBLISH", "chat/room", envelope)
        await asyncio.to_thread(redis_server.command, "PUBLISH", "chat/room", envelope[:-1])
        await asyncio.to_thread(redis_server.command, "PUBLISH", "chat/room", "after")
        await expect(client, "a", b"\x01", "c", "after")
        client.close()
    assert bp.stats["received"] == 4


def test_envelope_round_trip() -> None:
    envelope = encode_envelope(b"\0" * 8, ["héllo", b"\x00" * 70000, ""])
    assert envelope.startswith(MAGIC)
    assert decode_envelope(envelope) == (serialize_frame(1, "héllo") + serialize_frame(2, b"\x00" * 70000)
                                         + serialize_frame(1, ""))
    with pytest.raises(ValueError, match="opcode"):
        decode_envelope(MAGIC + b"\0" * 8 + b"\x09\0\0\0\0")


# ---------------------------------------------------------------- the app's side


class RecordingBackplane:
    """A broker that only records: the ``Backplane`` protocol is all an app needs."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.deliver: Callable[[str, bytes], object] | None = None

    async def start(self, deliver: Callable[[str, bytes], object], topics: Iterable[str]) -> None:
        self.deliver = deliver
        self.calls.append(("start", sorted(topics)))

    async def stop(self) -> None:
        self.calls.append(("stop",))

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview) -> None:
        self.calls.append(("publish", topic, message))

    def subscribe(self, topic: str) -> None:
        self.calls.append(("subscribe", topic))

    def unsubscribe(self, topic: str) -> None:
        self.calls.append(("unsubscribe", topic))


async def test_a_backplane_object_plugs_in() -> None:
    fake = RecordingBackplane()
    assert isinstance(fake, Backplane)
    app = make_app(fake)
    async with app.serve() as listener, app.serve() as second:
        assert fake.calls == [("start", [])]  # once for the app, not per listener
        c1, c2 = await open_clients(listener.port, 1) + await open_clients(second.port, 1)
        await command(c1, "sub news")
        await command(c2, "sub news")
        await c1.send_text("wspub news hi")
        await expect(c2, "hi")
        assert fake.deliver is not None
        fake.deliver("news", serialize_frame(BINARY, b"remote") + serialize_frame(1, "x"))
        await expect(c1, b"remote", "x")
        await expect(c2, b"remote", "x")
        await command(c1, "unsub news")
        await command(c2, "unsub news")
        close_all((c1, c2))
    assert fake.calls == [("start", []), ("subscribe", "news"), ("publish", "news", "hi"),
                          ("unsubscribe", "news"), ("stop",)]
    assert app.hub.topics.on_first_subscriber is None


async def test_publish_threadsafe_reaches_other_processes(redis_server: RedisServer) -> None:
    app_a, app_b = make_app(backplane(redis_server.url)), make_app(backplane(redis_server.url))
    async with app_a.serve() as la, app_a.serve() as la2, app_b.serve() as lb:
        (a,) = await open_clients(la2.port, 1)
        (b,) = await open_clients(lb.port, 1)
        await command(a, "sub news")
        await command(b, "sub news")
        await eventually(lambda: redis_server.numsub("harpia:news") == {"harpia:news": 2})
        thread = threading.Thread(target=app_a.publish_threadsafe, args=("news", "threaded"))
        thread.start()
        thread.join()
        # Once, although app A has two listeners.
        await expect(a, "threaded", quiet=0.2)
        await expect(b, "threaded", quiet=0.1)
        close_all((a, b))
    assert la.port != lb.port


def test_pubsub_settings_are_checked() -> None:
    assert harpia().hub.backplane is None  # the in-process registry is the default
    assert isinstance(harpia(pubsub="redis://127.0.0.1:1/0").hub.backplane, RedisBackplane)
    with pytest.raises(ConfigurationError, match="redis://"):
        harpia(pubsub="http://localhost:6379")
    with pytest.raises(ConfigurationError, match="backplane object"):
        harpia(pubsub=42)
    with pytest.raises(ConfigurationError, match="max_backoff"):
        RedisBackplane("redis://x", max_backoff=0)


async def test_listeners_on_two_loops_are_refused(redis_server: RedisServer) -> None:
    app = make_app(backplane(redis_server.url))
    async with app.serve():
        def other_loop() -> BaseException | None:
            async def serve_there() -> None:
                async with app.serve():
                    pass
            try:
                asyncio.run(serve_there())
            except BaseException as exc:
                return exc
            return None
        error = await asyncio.to_thread(other_loop)
        assert isinstance(error, ConfigurationError), error
        assert len(app.hub.servers) == 1
