"""Correctness tests for the load generator, against a deliberately awkward
WebSocket server written here from RFC 6455 (no library): frames dribbled a
byte at a time, fragmented messages with pings in between, several frames per
write, every length encoding, and faults wsload must catch (corrupted,
reordered, duplicated or missing messages, an early close, a bad handshake).

    pytest benchmarks/loadgen
"""
import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import e2e  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


class AwkwardServer:
    """Echo (/echo) and broadcast (/broadcast) server with a behaviour knob."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.clients: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> "AwkwardServer":
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        lines = head.decode().split("\r\n")
        path = lines[0].split()[1]
        key = next(ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if self.behaviour == "bad-accept":
            accept = accept[::-1]
        if self.behaviour == "silent":  # never answers the handshake
            await asyncio.sleep(30)
            return
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode())
        if path == "/broadcast":
            self.clients.append(writer)
        count, held = 0, []
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 127
                if n == 126:
                    n = struct.unpack("!H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await reader.readexactly(8))[0]
                mask = await reader.readexactly(4)
                data = unmask(await reader.readexactly(n), mask)
                opcode = b0 & 15
                if opcode == 8:
                    writer.write(frame(8, data[:2]))
                    await writer.drain()
                    break
                if opcode not in (1, 2):
                    continue  # pongs
                count += 1
                if path == "/broadcast":
                    await self._broadcast(writer, opcode, data, count)
                else:
                    await self._echo(reader, writer, opcode, data, count, held)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if writer in self.clients:
                self.clients.remove(writer)
            writer.close()

    async def _echo(self, reader, writer, opcode, data, count, held) -> None:
        b = self.behaviour
        fault = b.removeprefix("coalesce-")  # coalesce-X: fault X inside runs of several frames per write
        if fault == "corrupt" and count == 10:
            data = data[:-1] + bytes([data[-1] ^ 1])
        if fault == "opcode" and count == 10:
            opcode = 3 - opcode  # text <-> binary
        if fault == "digit" and count == 10:
            data = data[:2] + b"!" + data[3:]  # not a base64 digit
        if fault == "truncate" and count == 10:
            data = data[:-1]
        if fault == "duplicate" and count == 10:
            held.append(frame(opcode, data))
        if b == "early-close" and count == 10:
            writer.write(frame(8, struct.pack("!H", 1001)))
            await writer.drain()
            raise ConnectionError
        if b == "reorder" and count == 5:
            held.append(frame(opcode, data))
            return
        out = frame(opcode, data)
        if b == "reorder" and held:
            out += held.pop()
        if b == "dribble":  # every byte its own segment: headers and payloads split across reads
            for i in range(len(out)):
                writer.write(out[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)
            return
        if b == "fragment":  # three fragments with a ping between them
            third = max(1, len(data) // 3)
            out = (frame(opcode, data[:third], fin=False) + frame(9, b"hi")
                   + frame(0, data[third:2 * third], fin=False) + frame(0, data[2 * third:]))
        if b.startswith("coalesce"):  # several frames per write, flushed when the input runs dry
            held.append(out)
            if len(held) < 5 and reader._buffer:
                return
            out = b"".join(held)
            held.clear()
        writer.write(out)

    async def _broadcast(self, writer, opcode, data, count) -> None:
        out = frame(opcode, data)
        for i, client in enumerate(list(self.clients)):
            if self.behaviour == "skip" and count == 300 and i == 1:
                continue
            client.write(out + out if self.behaviour == "duplicate" and count == 300 and i == 1 else out)


@pytest.fixture(scope="module")
def wsload() -> Path:
    return e2e.build_loadgen()


def run(wsload: Path, port: int, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([str(wsload), "--port", str(port), "--warmup", "0", "--timeout", "30", *args],
                          capture_output=True, text=True, timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc.returncode, json.loads(lines[-1]) if lines else {}, proc.stderr


@pytest.mark.parametrize("size", [1, 7, 8, 125, 126, 65535, 65536, 70000, 1 << 20])
@pytest.mark.parametrize("behaviour", ["plain", "fragment", "coalesce"])
def test_echo_lengths(wsload, behaviour, size):
    with AwkwardServer(behaviour) as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "pipeline", "--conns", "3", "--depth", "4",
                           "--size", str(size), "--binary", "--messages", "20" if size > 70000 else "400")
    assert rc == 0, err
    assert res["errors"] == 0 and res["messages"] >= 20 and res["p50_us"] > 0


def test_dribbled_frames(wsload):
    with AwkwardServer("dribble") as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "pingpong", "--conns", "2", "--size", "300", "--text",
                           "--messages", "30")
    assert rc == 0, err
    assert res["messages"] == 30


@pytest.mark.parametrize("behaviour,mode,code,needle", [
    ("corrupt", "pingpong", 2, "payload byte"),
    ("reorder", "pipeline", 2, "sequence"),
    ("early-close", "pingpong", 1, "closed the connection early"),
    ("bad-accept", "pingpong", 1, "Sec-WebSocket-Accept"),
])
def test_faults_are_caught(wsload, behaviour, mode, code, needle):
    with AwkwardServer(behaviour) as srv:
        rc, res, err = run(wsload, srv.port, "--mode", mode, "--conns", "1", "--size", "64", "--messages", "100")
    assert rc == code, err
    assert needle in err and needle in res["error"]


@pytest.mark.parametrize("fault,needle", [
    ("corrupt", "payload byte"),
    ("opcode", "opcode 2, expected 1"),
    ("digit", "not a sequence number"),
    ("truncate", "message of 63 bytes"),
    ("duplicate", "sequence"),
])
def test_faults_among_many_frames_per_read_are_caught(wsload, fault, needle):
    """The fast path takes many whole frames per read; one wrong frame among them still fails the run."""
    with AwkwardServer("coalesce-" + fault) as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "pipeline", "--conns", "2", "--depth", "8", "--size", "64",
                           "--messages", "400")
    assert rc == 2, err
    assert needle in err and needle in res["error"]


def test_latency_is_sampled_in_throughput_modes_only(wsload):
    with AwkwardServer("plain") as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "pipeline", "--conns", "3", "--depth", "4", "--messages", "400")
        assert rc == 0, err
        assert res["latency_sample_every"] == 16 and res["p50_us"] > 0 and res["messages"] == 400
        rc, res, err = run(wsload, srv.port, "--mode", "pingpong", "--conns", "1", "--messages", "50")
        assert rc == 0, err
        assert res["latency_sample_every"] == 1 and 0 < res["p50_us"] <= res["p99_us"]


def test_broadcast_deliveries_are_counted_exactly(wsload):
    """--messages M with C clients: C * M deliveries, none of the sync messages before the run among them."""
    with AwkwardServer("plain") as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "broadcast", "--conns", "20", "--depth", "8",
                           "--messages", "500")
    assert rc == 0, err
    assert res["messages"] == 500 and res["deliveries"] == 20 * 500


def test_broadcast_and_duration_mode(wsload):
    with AwkwardServer("plain") as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "broadcast", "--conns", "20", "--depth", "8",
                           "--duration", "0.5")
    assert rc == 0, err
    assert res["deliveries_per_s"] > 0 and res["msgs_per_s"] > 0
    assert res["deliveries_per_s"] == pytest.approx(20 * res["msgs_per_s"], rel=0.2)


@pytest.mark.parametrize("behaviour", ["skip", "duplicate"])
def test_broadcast_faults_are_caught(wsload, behaviour):
    with AwkwardServer(behaviour) as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "broadcast", "--conns", "5", "--depth", "8",
                           "--messages", "1000")
    assert rc == 2, err
    assert "broadcast sequence" in err


def test_connect_and_idle(wsload):
    with AwkwardServer("plain") as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "connect", "--conns", "4", "--messages", "200")
        assert rc == 0, err
        assert res["messages"] >= 200 and res["conns_per_s"] > 0
        rc, res, err = run(wsload, srv.port, "--mode", "idle", "--conns", "300", "--settle", "0.1",
                           "--server-pid", str(os.getpid()))
        assert rc == 0, err
        assert res["kib_per_conn"] is not None and res["open_s"] > 0


def test_global_deadline(wsload):
    with AwkwardServer("silent") as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "pingpong", "--messages", "10", "--timeout", "1")
    assert rc == 1 and "timed out" in err


def test_refused(wsload):
    port = e2e.free_port()  # nothing listens there
    rc, res, err = run(wsload, port, "--mode", "pingpong", "--messages", "10")
    assert rc == 1 and "refused" in err


def test_server_cpu_counts_the_process_tree(wsload):
    """--server-pid: the CPU of the process and its live children over the measured window only."""
    burner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        with AwkwardServer("plain") as srv:
            # the server is this process (a thread); the busy child is its descendant
            rc, res, err = run(wsload, srv.port, "--mode", "pingpong", "--conns", "1", "--size", "32",
                               "--duration", "1.5", "--server-pid", str(os.getpid()))
    finally:
        burner.kill()
        burner.wait()
    assert rc == 0, err
    # the child spins a whole core when it gets one; on a loaded machine it gets less, never nothing
    assert 0.1 <= res["server_cpu_s"] <= 2 * 1.5 * os.cpu_count() + 1
    rc, res, err = run(wsload, 1, "--mode", "pingpong", "--conns", "1", "--messages", "1")
    assert res.get("server_cpu_s") is None  # no window measured, no figure


def test_server_cpu_absent_without_a_server_pid(wsload):
    with AwkwardServer("plain") as srv:
        rc, res, err = run(wsload, srv.port, "--mode", "pingpong", "--conns", "1", "--messages", "50")
    assert rc == 0, err
    assert res["server_cpu_s"] is None and res["messages"] == 50
