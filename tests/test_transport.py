"""``harpia._transport.SocketTransport`` and ``harpia._acceptor``: harpia's own socket I/O
on plain TCP and Unix sockets, over real sockets, on asyncio and uvloop."""
from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harpia import harpia
from harpia._acceptor import AcceptingServer
from harpia._transport import SocketTransport
from websockets.asyncio.client import connect

HIGH = 64 * 1024


class Recorder(asyncio.Protocol):
    """Records every callback; ``echo`` sends back what it reads."""

    def __init__(self, echo: bool = False, keep_open: bool = False) -> None:
        self.echo = echo
        self.keep_open = keep_open
        self.transport: Any = None
        self.received = bytearray()
        self.calls: list[str] = []
        self.lost: list[BaseException | None] = []
        self.in_callback = False
        self.made = asyncio.get_running_loop().create_future()
        self.gone = asyncio.get_running_loop().create_future()
        self.paused = asyncio.Event()
        self.resumed = asyncio.Event()
        self.size_at_pause = -1
        self.size_at_resume = -1
        self.got_data = asyncio.Event()
        self.got_eof = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.calls.append("made")
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        self.in_callback = True
        try:
            self.received += data
            self.got_data.set()
            if self.echo:
                self.transport.write(data)
        finally:
            self.in_callback = False

    def eof_received(self) -> bool:
        self.calls.append("eof")
        self.got_eof.set()
        return self.keep_open

    def pause_writing(self) -> None:
        self.calls.append("pause")
        self.size_at_pause = self.transport.get_write_buffer_size()
        self.paused.set()

    def resume_writing(self) -> None:
        self.calls.append("resume")
        self.size_at_resume = self.transport.get_write_buffer_size()
        self.resumed.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        assert not self.in_callback, "connection_lost called from inside another callback"
        self.calls.append("lost")
        self.lost.append(exc)
        if not self.gone.done():
            self.gone.set_result(exc)


class Served:
    """An ``AcceptingServer`` on 127.0.0.1 making ``Recorder``s."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.protocols: list[Recorder] = []
        self.errors: list[int] = []

    async def __aenter__(self) -> Served:
        loop = asyncio.get_running_loop()
        sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = sock.getsockname()[1]
        self.server = AcceptingServer(loop, [sock], self._make, self.errors.append)
        return self

    def _make(self) -> Recorder:
        self.protocols.append(Recorder(**self.options))
        return self.protocols[-1]

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for p in self.protocols:
            if p.transport is not None:
                p.transport.abort()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Recorder]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        for _ in range(500):
            if len(self.protocols) and self.protocols[-1].transport is not None:
                break
            await asyncio.sleep(0.01)
        return reader, writer, self.protocols[-1]


async def test_echo_and_extra_info() -> None:
    async with Served(echo=True) as served:
        reader, writer, proto = await served.connect()
        t = proto.transport
        assert isinstance(t, SocketTransport)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
        assert t.get_extra_info("peername") == writer.get_extra_info("sockname")
        assert t.get_extra_info("sockname") == ("127.0.0.1", served.port)
        sock = t.get_extra_info("socket")
        assert sock.getpeername() == writer.get_extra_info("sockname")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert t.get_extra_info("ssl_object") is None
        assert t.get_extra_info("nothing", "dflt") == "dflt"
        assert t.is_reading() and not t.is_closing() and t.can_write_eof()
        assert t.get_write_buffer_limits() == (HIGH // 4, HIGH)
        writer.close()
        assert await asyncio.wait_for(proto.gone, 10) is None
        assert proto.calls == ["made", "eof", "lost"]
        assert t.is_closing() and t.get_extra_info("socket") is None
        assert sock.fileno() == -1       # detached, not closed twice


async def test_a_client_that_does_not_read_pauses_then_resumes_writing() -> None:
    async with Served() as served:
        reader, writer, proto = await served.connect()
        t = proto.transport
        chunk = bytes(range(256)) * 256                  # 64 KiB
        sent = 0
        for _ in range(2000):                            # the kernel's buffers are finite
            t.write(chunk)
            sent += len(chunk)
            if proto.paused.is_set():
                break
        assert proto.calls == ["made", "pause"]
        assert proto.size_at_pause > HIGH
        assert t.get_write_buffer_size() == proto.size_at_pause
        # The client reads: the buffer drains through the write-readiness path.
        data = await asyncio.wait_for(reader.readexactly(sent), 30)
        assert data == chunk * (sent // len(chunk))
        await asyncio.wait_for(proto.resumed.wait(), 10)
        assert proto.calls == ["made", "pause", "resume"]
        assert 0 <= proto.size_at_resume <= HIGH // 4
        assert t.get_write_buffer_size() == 0
        writer.close()


async def test_output_kept_by_reference_and_copied_stays_in_order() -> None:
    # Large bytes objects the kernel does not take are kept by reference, the rest copied:
    # a mix of both, written while the client does not read, arrives in order.
    async with Served() as served:
        reader, writer, proto = await served.connect()
        t = proto.transport
        pieces: list[bytes] = []
        for i in range(40):
            if i % 3 == 0:
                piece = os.urandom(300_000)                 # bytes: kept by reference
                t.write(piece)
            elif i % 3 == 1:
                piece = os.urandom(100)                     # small: copied
                t.write(piece)
            else:
                piece = os.urandom(70_000)                  # a bytearray: copied
                t.write(bytearray(piece))
            pieces.append(piece)
        expected = b"".join(pieces)
        assert 0 < t.get_write_buffer_size() <= len(expected)
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 30) == expected
        for _ in range(100):
            if t.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        assert t.get_write_buffer_size() == 0
        writer.close()


async def test_write_buffer_limits_as_asyncio() -> None:
    async with Served() as served:
        _, writer, proto = await served.connect()
        t = proto.transport
        t.set_write_buffer_limits(high=100)
        assert t.get_write_buffer_limits() == (25, 100)
        t.set_write_buffer_limits(low=10)
        assert t.get_write_buffer_limits() == (10, 40)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=1, low=2)
        writer.close()


async def test_eof_kept_open_then_written_and_closed() -> None:
    async with Served(keep_open=True) as served:
        reader, writer, proto = await served.connect()
        writer.write(b"last words")
        writer.write_eof()
        await asyncio.wait_for(proto.got_eof.wait(), 10)
        assert bytes(proto.received) == b"last words"
        proto.transport.write(b"still here")
        proto.transport.close()
        assert await asyncio.wait_for(reader.read(), 10) == b"still here"
        assert await asyncio.wait_for(proto.gone, 10) is None
        assert proto.calls == ["made", "eof", "lost"]


async def test_write_eof_half_closes() -> None:
    async with Served() as served:
        reader, writer, proto = await served.connect()
        proto.transport.write(b"bye")
        proto.transport.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"bye"
        with pytest.raises(RuntimeError):
            proto.transport.write(b"more")
        writer.close()
        await asyncio.wait_for(proto.gone, 10)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_reset_while_reading_is_connection_lost_with_the_error() -> None:
    async with Served() as served:
        _, writer, proto = await served.connect()
        _reset(writer)
        exc = await asyncio.wait_for(proto.gone, 10)
        assert isinstance(exc, ConnectionResetError)
        await asyncio.sleep(0.05)
        assert proto.calls == ["made", "lost"]


async def test_bytes_then_a_reset_are_both_noticed() -> None:
    # uvloop's own add_reader never calls back once a socket reports an error: a reset that
    # came behind some bytes left such connections open for ever.
    async with Served() as served:
        protos = []
        for _ in range(20):
            _, writer, proto = await served.connect()
            writer.write(b"GET / HTTP/1.1\r\nHo")
            await writer.drain()
            _reset(writer)
            protos.append(proto)
        for proto in protos:
            exc = await asyncio.wait_for(proto.gone, 10)
            assert exc is None or isinstance(exc, ConnectionResetError)


async def test_writing_to_a_reset_peer_fails_once_without_sigpipe() -> None:
    async with Served() as served:
        _, writer, proto = await served.connect()
        t = proto.transport
        t.pause_reading()                     # only the write path can notice
        assert not t.is_reading()
        _reset(writer)
        await asyncio.sleep(0.1)
        for _ in range(100):
            t.write(b"x" * 1000)              # EPIPE / ECONNRESET: MSG_NOSIGNAL, no signal
            if t.is_closing():
                break
        exc = await asyncio.wait_for(proto.gone, 10)
        assert isinstance(exc, (BrokenPipeError, ConnectionResetError))
        t.write(b"after")                     # ignored, as asyncio does
        await asyncio.sleep(0.05)
        assert proto.calls.count("lost") == 1


async def test_close_flushes_what_is_buffered_abort_drops_it() -> None:
    async with Served() as served:
        reader, writer, proto = await served.connect()
        big = os.urandom(4 * 1024 * 1024)
        proto.transport.write(big)
        assert proto.transport.get_write_buffer_size() > 0
        proto.transport.close()
        assert proto.transport.is_closing() and not proto.gone.done()
        assert await asyncio.wait_for(reader.read(), 30) == big
        assert await asyncio.wait_for(proto.gone, 10) is None

        reader, writer, proto = await served.connect()
        proto.transport.write(big)
        proto.transport.abort()
        assert proto.transport.get_write_buffer_size() == 0
        assert await asyncio.wait_for(proto.gone, 10) is None
        try:
            got = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            got = b""
        assert len(got) < len(big)


async def test_connection_lost_once_from_a_loop_callback() -> None:
    async with Served() as served:
        _, writer, proto = await served.connect()
        t = proto.transport

        def data_received(data: bytes) -> None:
            proto.in_callback = True
            t.abort()
            t.close()
            t.abort()
            assert proto.lost == []           # not re-entrantly
            proto.in_callback = False

        proto.data_received = data_received  # type: ignore[method-assign]
        writer.write(b"x")
        assert await asyncio.wait_for(proto.gone, 10) is None
        await asyncio.sleep(0.05)
        assert proto.calls == ["made", "lost"]
        writer.close()


async def test_pause_reading_holds_data_back() -> None:
    async with Served() as served:
        _, writer, proto = await served.connect()
        t = proto.transport
        t.pause_reading()
        t.pause_reading()                      # idempotent
        writer.write(b"held")
        await writer.drain()
        await asyncio.sleep(0.1)
        assert proto.received == b""
        t.resume_reading()
        await asyncio.wait_for(proto.got_data.wait(), 10)
        assert proto.received == b"held"
        writer.close()


class Buffered(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.area = bytearray(3)             # small: a read is cut to fit
        self.received = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.area

    def buffer_updated(self, nbytes: int) -> None:
        self.received += self.area[:nbytes]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.done.set_result(bytes(self.received))


async def test_a_buffered_protocol_reads_into_its_own_buffer() -> None:
    async with Served() as served:
        _, writer, proto = await served.connect()
        buffered = Buffered()
        proto.transport.set_protocol(buffered)
        assert proto.transport.get_protocol() is buffered
        writer.write(b"0123456789")
        writer.close()
        assert await asyncio.wait_for(buffered.done, 10) == b"0123456789"


@pytest.mark.timeout(60)
async def test_a_burst_of_connects_is_accepted_in_batches() -> None:
    async with Served(echo=True) as served:
        socks = []
        for _ in range(300):                   # more than one batch of 64
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", served.port))
            except BlockingIOError:
                pass
            socks.append(s)
        loop = asyncio.get_running_loop()
        for _ in range(3000):
            if len(served.protocols) == 300:
                break
            await asyncio.sleep(0.01)
        assert len(served.protocols) == 300
        assert len({p.transport.get_extra_info("peername") for p in served.protocols}) == 300
        for s in socks[:5]:
            await loop.sock_sendall(s, b"ping")
            assert await asyncio.wait_for(loop.sock_recv(s, 4), 10) == b"ping"
        for s in socks:
            s.close()


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    loop = asyncio.get_running_loop()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen()
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder(echo=True))
        return made[-1]

    server = AcceptingServer(loop, [listening], make, print)
    assert server.is_serving() and server.sockets == (listening,)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"over unix")
    assert await asyncio.wait_for(reader.readexactly(9), 10) == b"over unix"
    assert made[0].transport.get_extra_info("peername") == ""
    server.close()
    assert not server.is_serving() and server.sockets == () and listening.fileno() == -1
    await server.wait_closed()
    writer.close()
    await asyncio.wait_for(made[0].gone, 10)


async def test_the_switch_puts_the_loop_transport_back() -> None:
    kinds = []
    for loop_transport in (False, True):
        app = harpia(loop_transport=loop_transport)
        app.ws("/", {"open": lambda ws: kinds.append(type(ws.transport).__name__)})
        async with app.serve(port=0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 101")
            writer.close()
    assert kinds[0] == "SocketTransport" and kinds[1] != "SocketTransport"


EMFILE_SERVER = textwrap.dedent("""
    import asyncio, logging, resource, socket, sys, time
    from harpia._acceptor import AcceptingServer

    logging.basicConfig(level=logging.WARNING)
    errors = []

    class Quiet(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(b"hi")

    async def main():
        loop = asyncio.get_running_loop()
        sock = socket.create_server(("127.0.0.1", 0))
        server = AcceptingServer(loop, [sock], Quiet, errors.append)
        print(sock.getsockname()[1], flush=True)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(__import__("os").listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 3, hard))
        cpu = time.process_time()
        await asyncio.sleep(2.0)
        print(len(errors), round(time.process_time() - cpu, 2), flush=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await asyncio.sleep(float(sys.argv[2]))   # the retry timer fires: accepting again
        print("done", flush=True)

    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
""")


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_out_of_descriptors_backs_off_and_recovers(kind: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", EMFILE_SERVER, kind, "1.5"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        errors, cpu = proc.stdout.readline().split()
        # A few failed accepts, a quarter of a second apart: no busy loop.
        assert 1 <= int(errors) <= 20
        assert float(cpu) < 1.0
        # Once descriptors are back, the waiting connections are accepted and served.
        for c in clients:
            assert c.recv(2) == b"hi"
        assert proc.stdout.readline().strip() == "done"
    finally:
        proc.kill()
        proc.wait()


async def test_large_messages_echo_intact_when_their_storage_is_reused() -> None:
    # A large message nothing refers to after its handler lends its storage to the next
    # one (harpia._buffer).  Echoes the kernel takes only in part (the client reads late)
    # are kept by the transport, and messages a handler keeps, must not be overwritten.
    kept: list[bytes] = []

    def on_message(ws: Any, message: Any) -> None:
        if len(kept) < 2:
            kept.append(message)
        ws.send(message)

    app = harpia()
    app.ws("/", {"message": on_message}, max_payload_length=8 << 20)
    sizes = [1 << 20, 700_000, 1 << 20, (1 << 20) + 1, 300_000, 1 << 20, 2 << 20, 1 << 20]
    payloads = [os.urandom(n) for n in sizes]
    async with app.serve(port=0) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/", max_size=None,
                           compression=None) as client:
            async def send_all() -> None:
                for payload in payloads:
                    await client.send(payload)

            sending = asyncio.ensure_future(send_all())
            await asyncio.sleep(0.2)                # the server's echoes queue up meanwhile
            for i, payload in enumerate(payloads):
                echoed = await asyncio.wait_for(client.recv(), 30)
                assert echoed == payload, f"message {i} of {len(echoed)} bytes differs"
            await asyncio.wait_for(sending, 30)
            # Messages in a row, each read before the next is sent: reused storage.
            for payload in payloads[::-1]:
                await client.send(payload)
                assert await asyncio.wait_for(client.recv(), 30) == payload
    assert kept == payloads[:2]


async def test_large_frames_sent_by_header_and_payload_together_arrive_in_order() -> None:
    # A large frame's header and payload go to the kernel in one call; whatever part of
    # it the kernel leaves (inside the header or the payload, from bytes kept by reference
    # or a bytearray copied) waits in order with the small frames queued around it.
    sizes = [100, 70_000, 300_000, 65_536, 1 << 20, 20, 200_000, 65_535] * 6
    payloads = [os.urandom(n) for n in sizes]

    def on_message(ws: Any, message: Any) -> None:
        for i, payload in enumerate(payloads):
            ws.send(bytearray(payload) if i % 5 == 1 else payload)

    app = harpia()
    app.ws("/", {"message": on_message}, backpressure_limit=64 << 20)
    async with app.serve(port=0) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/", max_size=None, max_queue=2,
                           compression=None) as client:
            await client.send("go")
            await asyncio.sleep(0.3)                # the client's queue is full meanwhile
            for i, payload in enumerate(payloads):
                echoed = await asyncio.wait_for(client.recv(), 30)
                assert echoed == payload, f"frame {i} of {len(echoed)} bytes differs"
