"""Helpers of the hardening tests (``test_hardening_*.py``): the bystander, a server in a
process of its own, and a writer that floods without reading.

Each attack runs against a real server while a ``Bystander`` (websockets' client, a
well-behaved peer) keeps echoing numbered messages on ``/echo``: at the end it must have
got every echo, in order, within ``max_rtt``, and close cleanly with 1000.  Tests get
bystanders from the ``bystander`` fixture (conftest.py), which fails a test that made one
and never ran it.
"""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wsclient import HttpResponse, RawClient, ws_connect

ECHO = {"message": lambda ws, message: ws.send(message)}
MiB = 1024 * 1024


class Bystander:
    """A websockets client that echoes a numbered message every ``every`` seconds on
    ``path`` while the test's attack runs (``async with bystander(port) as b``)."""

    def __init__(self, port: int, path: str = "/echo", *, every: float = 0.01,
                 max_rtt: float = 1.0, **connect: Any) -> None:
        self.port = port
        self.path = path
        #: More for ``ws_connect``: ``scheme="wss", ssl=context`` for a TLS listener.
        self.connect = connect
        self.every = every
        self.max_rtt = max_rtt
        self.rtts: list[float] = []
        self.finished = False
        self._stop = False
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None

    async def _echo(self, text: str) -> None:
        started = time.perf_counter()
        await self._ws.send(text)
        reply = await asyncio.wait_for(self._ws.recv(), 5)
        self.rtts.append(time.perf_counter() - started)
        assert reply == text, f"the bystander sent {text!r} and got {reply!r} back"

    async def _run(self) -> None:
        i = 1
        while not self._stop:
            await self._echo(f"bystander {i}")
            i += 1
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> Bystander:
        self._ws = await ws_connect(self.port, self.path, **self.connect)
        await self._echo("bystander 0")           # it works before the attack starts
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        assert self._task is not None
        self._stop = True
        if exc_type is not None:                  # the test failed: just clean up
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            await self._ws.close()
            self.finished = True
            return
        await asyncio.wait_for(self._task, 10)    # raises what went wrong meanwhile
        await self._echo("bystander last")
        await self._ws.close()
        assert self._ws.close_code == 1000, "the bystander's close handshake failed"
        assert len(self.rtts) >= 3, "the bystander hardly ran"
        assert max(self.rtts) < self.max_rtt, f"the bystander waited {max(self.rtts):.3f} s"
        self.finished = True

    def median_rtt(self) -> float:
        ordered = sorted(self.rtts)
        return ordered[len(ordered) // 2]


class ServerProcess:
    """``hardening_server.py`` in a subprocess: ``async with ServerProcess(loop_kind,
    routes, **app_settings) as server`` gives ``server.port``, ``rss()``, ``stats()``."""

    SCRIPT = Path(__file__).with_name("hardening_server.py")

    def __init__(self, loop_kind: str, routes: dict[str, tuple[str, dict[str, Any]]],
                 *, tls: dict[str, str] | None = None, **app_settings: Any) -> None:
        config: dict[str, Any] = {"app": app_settings, "routes": routes}
        if tls is not None:
            config["tls"] = tls                   # a TLS listener too: ``tls_port``
        self.config = json.dumps(config)
        self.tls_port = 0
        self.loop_kind = loop_kind
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = ""

    async def __aenter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(self.SCRIPT), self.loop_kind, self.config],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 20)
        if not line:
            raise RuntimeError(f"the server did not start: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
        ports = [int(port) for port in line.split()]
        self.port = ports[0]
        self.tls_port = ports[-1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 15)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                self.proc.wait()
            self.log = self.proc.stderr.read().decode()  # type: ignore[union-attr]
        assert self.proc.returncode == 0, self.log

    def _status(self, field: str) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def fds(self) -> int:
        """File descriptors the server holds now."""
        assert self.proc is not None
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def rss(self) -> int:
        """The server's resident memory now, in bytes."""
        return self._status("VmRSS")

    def reset_peak(self) -> int:
        """Start measuring the peak afresh (Linux: clear_refs 5); returns the RSS now."""
        assert self.proc is not None
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.rss()

    def peak(self) -> int:
        """The highest resident memory since ``reset_peak``, in bytes."""
        return self._status("VmHWM")

    async def stats(self) -> dict[str, Any]:
        """``GET /stats`` (the app's counters, plus ``pending`` and ``live``)."""
        return await get_json(self.port, "/stats")

    def warnings(self) -> list[str]:
        """The server's warning lines (after the ``async with``)."""
        return [line for line in self.log.splitlines() if line.startswith("WARNING")]


async def http_get(port: int, path: str) -> HttpResponse:
    client = await RawClient.connect(port)
    try:
        await client.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return await client.read_response()
    finally:
        client.close()


async def get_json(port: int, path: str) -> dict[str, Any]:
    response = await http_get(port, path)
    assert response.status == 200, response
    return json.loads(response.body)  # type: ignore[no-any-return]


async def push(sock: socket.socket, chunk: bytes, total: int, *, stall: float = 0.5) -> int:
    """Write ``chunk`` again and again, up to ``total`` bytes, and read nothing; stop early
    when the peer has taken nothing for ``stall`` seconds.  Returns the bytes the kernel
    took.  ``chunk`` must hold whole frames (it is repeated)."""
    loop = asyncio.get_running_loop()
    view = memoryview(chunk)
    sent = offset = 0
    while sent < total:
        try:
            n = sock.send(view[offset:min(len(chunk), offset + total - sent)])
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()

            def ready() -> None:
                if not writable.done():
                    writable.set_result(None)

            loop.add_writer(sock, ready)
            try:
                await asyncio.wait_for(writable, stall)
            except asyncio.TimeoutError:
                break
            finally:
                loop.remove_writer(sock)
            continue
        sent += n
        offset = (offset + n) % len(chunk)
    return sent


async def wait_for(condition: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition()`` (sync or async) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
