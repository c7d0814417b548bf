"""A real ``redis-server`` for the backplane tests: started on a free loopback port, stopped after.

The tests need Debian's ``redis-server`` (``apt-get install redis-server``; ``ci/test``
installs it). When it is missing the fixture raises, so the tests FAIL instead of being
skipped: a backplane that was never run against a real broker is not tested.

    server = RedisServer.start()      # waits until it answers PING
    server.url                        # "redis://127.0.0.1:<port>/0"
    server.kill(); server.launch()    # a broker outage, on the same port
    server.pause(); server.resume()   # a broker that hangs without closing anything
    server.stop()
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

REDIS_SERVER = os.environ.get("HARPIA_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process without persistence, on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = tempfile.mkdtemp(prefix="harpia-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, port: int | None = None) -> RedisServer:
        if not (os.path.isfile(REDIS_SERVER) and os.access(REDIS_SERVER, os.X_OK)):
            raise RuntimeError(
                f"redis-server not found (looked for {REDIS_SERVER}): the backplane tests need a "
                "real Redis; install it with 'apt-get install redis-server' (ci/test does)")
        server = cls(port or free_port())
        server.launch()
        return server

    def launch(self, timeout: float = 10.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        deadline = time.monotonic() + timeout
        while True:
            self.process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.workdir,
                 "--protected-mode", "no", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break  # exited: the port is not free yet (a restart right after a kill)
                if self._ping():
                    return
                time.sleep(0.02)
            else:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server exited: {error.strip()}")
            time.sleep(0.1)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str | bytes) -> object:
        """One command through a short-lived synchronous client (for assertions)."""
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            return client.execute_command(*args)

    def numsub(self, *channels: str) -> dict[str, int]:
        reply = self.command("PUBSUB", "NUMSUB", *channels)
        assert isinstance(reply, list)
        return {name.decode(): int(count) for name, count in zip(reply[::2], reply[1::2])}

    def channels(self, pattern: str = "*") -> set[str]:
        reply = self.command("PUBSUB", "CHANNELS", pattern)
        assert isinstance(reply, list)
        return {name.decode() for name in reply}

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye (connections reset)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a host that hangs)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.launch()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            terminate(self.process)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if the process is still there 5 s later."""
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for one test (it starts in about 10 ms)."""
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()
