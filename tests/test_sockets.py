"""Serving on a Unix socket, on a socket made elsewhere, and on systemd's socket
activation through ``python -m harpia`` (real sockets, real processes)."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from wsclient import TEXT, RawClient

from harpia import ConfigurationError, harpia
from harpia.sockets import inherited_socket, systemd_sockets


def echo_app() -> Any:
    app = harpia()
    app.ws("/echo", {"message": lambda ws, message: ws.send(message)})
    app.get("/health", lambda: "ok")
    return app


async def unix_client(path: str) -> RawClient:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, path)
    return RawClient(sock)


async def echo_once(client: RawClient) -> None:
    assert (await client.handshake("/echo")).status == 101
    await client.send_text("hello")
    frame = await client.recv_frame()
    assert (frame.opcode, frame.payload) == (TEXT, b"hello")
    client.sock.close()


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    async with echo_app().serve(unix=path) as server:
        assert server.url == f"ws+unix://{path}"
        await echo_once(await unix_client(path))
    assert not os.path.exists(path)         # removed on stop
    made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made.bind(path)
    made.listen(8)
    async with echo_app().serve(sock=made) as server:
        assert server.url == f"ws+unix://{path}"
        await echo_once(await unix_client(path))
    assert os.path.exists(path)             # not ours to remove


async def test_unix_socket_replaces_a_stale_file_but_nothing_else(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))
    left.close()                           # the file stays, nobody listens: stale
    async with echo_app().serve(unix=str(stale)):
        await echo_once(await unix_client(str(stale)))
        with pytest.raises(ConfigurationError, match="another process is listening"):
            await echo_app().serve(unix=str(stale)).start()
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(ConfigurationError, match="not a socket"):
        await echo_app().serve(unix=str(regular)).start()
    assert regular.read_text() == "keep me"


async def test_a_socket_made_elsewhere() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    async with echo_app().serve(sock=sock, host="ignored") as server:
        assert server.port == port and server.url == f"ws://127.0.0.1:{port}"
        await echo_once(await RawClient.connect(port))


def test_unix_and_sock_together_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        echo_app().serve(unix="/tmp/x.sock", sock=socket.socket())


def test_systemd_variables() -> None:
    assert systemd_sockets({}) == []
    assert systemd_sockets({"LISTEN_FDS": "1", "LISTEN_PID": "1"}) == []   # another process
    with pytest.raises(ConfigurationError, match="not numbers"):
        systemd_sockets({"LISTEN_FDS": "x", "LISTEN_PID": str(os.getpid())})
    r, w = os.pipe()
    try:
        with pytest.raises(ConfigurationError, match="not a socket"):
            inherited_socket(r)
    finally:
        os.close(r)
        os.close(w)
    plain = socket.socket()
    try:
        with pytest.raises(ConfigurationError, match="does not listen"):
            inherited_socket(plain.fileno())
    finally:
        plain.close()


APP = """
from harpia import harpia
app = harpia()
app.ws("/echo", {"message": lambda ws, message: ws.send(f"{__import__('os').getpid()} {message}")})
"""

# What systemd does for a socket unit: the listening socket on fd 3, LISTEN_PID = the
# service's pid (known only after fork, hence a launcher that execs in place).
LAUNCH = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
          "os.execv(sys.executable, [sys.executable, '-m', 'harpia', *sys.argv[2:]])")


def launch(tmp_path: Path, listening: socket.socket, args: list[str], env: dict[str, str]) -> Any:
    (tmp_path / "sockapp.py").write_text(APP)
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(listening.fileno()), "sockapp:app", *args],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        pass_fds=(listening.fileno(),), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def wait_echo(port: int, process: Any, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = await RawClient.connect(port)
            break
        except OSError:
            assert time.monotonic() < deadline, "nobody answered on the inherited socket"
            assert process.poll() is None, process.communicate()[0].decode()
            await asyncio.sleep(0.05)
    assert (await client.handshake("/echo")).status == 101
    await client.send_text("hi")
    text = (await client.recv_frame(10.0)).payload.decode()
    client.sock.close()
    return text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["LISTEN_FDS", "--fd", "LISTEN_FDS with 2 workers"])
async def test_cli_serves_an_inherited_socket(tmp_path: Path, how: str) -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    port = listening.getsockname()[1]
    if how == "--fd":
        args, env = ["--fd", "3"], {}
    else:
        args, env = [], {"LISTEN_FDS": "1"}
    if "workers" in how:
        args += ["--workers", "2"]
    process = launch(tmp_path, listening, args, env)
    listening.close()                   # the child holds it now: connections still queue
    try:
        pids = set()
        for _ in range(12 if "workers" in how else 1):
            assert process.poll() is None, process.communicate()[0].decode()
            text = await wait_echo(port, process)
            pid, _, message = text.partition(" ")
            assert message == "hi"
            pids.add(int(pid))
        assert process.pid not in pids or "workers" not in how
    finally:
        process.send_signal(signal.SIGTERM)
        output = (await asyncio.to_thread(process.communicate, timeout=20))[0].decode()
    assert process.returncode == 0, output
