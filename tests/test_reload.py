"""SIGHUP to a server with workers: every worker is replaced, the old ones close their
clients with 1012, and a client connecting in a loop meanwhile is never refused."""
from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_workers import starve_descriptors, wait_gone
from wsclient import CLOSE, TEXT, RawClient

SCRIPT = """
import logging, os, sys
from harpia import harpia

logging.basicConfig(level=logging.INFO, format="%(message)s")
app = harpia(close_timeout=3)
app.ws("/", {"open": lambda ws: ws.send(f"pid {os.getpid()}")})
where = {"unix": sys.argv[2]} if sys.argv[1] == "unix" else {"host": "127.0.0.1", "port": 0}
app.listen(workers=2, **where)
"""


class Server:
    def __init__(self, tmp_path: Path, kind: str) -> None:
        (tmp_path / "app.py").write_text(SCRIPT)
        self.log_path = tmp_path / "log.txt"
        self.log = self.log_path.open("wb")
        self.unix = str(tmp_path / "app.sock")
        self.process = subprocess.Popen([sys.executable, "app.py", kind, self.unix], cwd=tmp_path,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.kind = kind
        self.port = 0

    def text(self) -> str:
        return self.log_path.read_text()

    async def started(self) -> None:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"listening on (\S+) with 2 workers", self.text())):
            assert self.process.poll() is None and time.monotonic() < deadline, self.text()
            await asyncio.sleep(0.05)
        if self.kind == "tcp":
            self.port = int(match.group(1).rsplit(":", 1)[1])

    async def connect(self) -> RawClient:
        if self.kind == "tcp":
            return await RawClient.connect(self.port)
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self.unix)
        return RawClient(sock)

    async def open(self) -> tuple[RawClient, int]:
        client = await self.connect()
        response = await client.handshake("/")
        assert response.status == 101, response
        frame = await client.recv_frame(10.0)
        assert frame.opcode == TEXT, frame
        return client, int(frame.payload.split()[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_sighup_replaces_workers_without_refusing_anyone(tmp_path: Path, kind: str) -> None:
    server = Server(tmp_path, kind)
    try:
        await server.started()
        before = {await server.open() for _ in range(16)}
        old_pids = {pid for _, pid in before}
        failures: list[str] = []
        seen_pids: set[int] = set()
        attempts = 0
        stop = asyncio.Event()

        async def keep_connecting() -> None:
            nonlocal attempts
            while not stop.is_set():
                attempts += 1
                try:
                    client, pid = await server.open()
                except (OSError, EOFError, AssertionError, asyncio.TimeoutError) as exc:
                    failures.append(repr(exc))
                    continue
                seen_pids.add(pid)
                client.sock.close()

        loops = [asyncio.ensure_future(keep_connecting()) for _ in range(6)]
        await asyncio.sleep(0.3)
        server.process.send_signal(signal.SIGHUP)
        # The old workers' clients are told the service restarts.
        for client, _ in before:
            frame = await client.recv_frame(20.0)
            assert frame.opcode == CLOSE and frame.close_code == 1012, frame
            client.sock.close()
        deadline = time.monotonic() + 30
        while server.text().count("replaced (pid") < 2:
            assert time.monotonic() < deadline, server.text()
            await asyncio.sleep(0.05)
        new_pids = {int(p) for p in re.findall(r"replaced \(pid \d+ -> (\d+)\)", server.text())}
        assert not new_pids & old_pids
        # Keep connecting until the new workers have served some of the loop.
        while not new_pids <= seen_pids and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*loops)
        assert failures == [], f"{len(failures)} of {attempts} connections failed: {failures[:5]}"
        assert attempts > 20
        assert new_pids <= seen_pids or kind == "unix"
        after = {pid for _, pid in [await server.open() for _ in range(8)]}
        assert after <= new_pids
        await wait_gone(old_pids, 20, "(an old one) is still there")
    finally:
        server.stop()
    assert server.process.returncode == 0, server.text()


@pytest.mark.timeout(90)
async def test_a_reload_that_cannot_start_a_worker_stops_and_the_old_ones_serve(tmp_path: Path) -> None:
    server = Server(tmp_path, "tcp")
    try:
        await server.started()
        before = {pid for _, pid in [await server.open() for _ in range(8)]}
        restore = starve_descriptors(server.process.pid)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload stopped: cannot start worker 0" not in server.text():
            assert time.monotonic() < deadline, server.text()
            await asyncio.sleep(0.05)
        restore()
        assert {pid for _, pid in [await server.open() for _ in range(8)]} <= before
        # With descriptors again, the next SIGHUP replaces both.
        server.process.send_signal(signal.SIGHUP)
        while server.text().count("replaced (pid") < 2:
            assert time.monotonic() < deadline, server.text()
            await asyncio.sleep(0.05)
        await wait_gone(before, 20, "(an old one) is still there")
        assert not {pid for _, pid in [await server.open() for _ in range(8)]} & before
    finally:
        server.stop()
    assert server.process.returncode == 0, server.text()
