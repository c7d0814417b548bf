"""``app.listen(workers=N)``: processes on one port, spread, broadcast through the backplane,
supervised (a dead worker comes back), stopped gracefully by one signal to the parent."""
from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis_server import RedisServer, free_port, redis_server  # noqa: F401 - a fixture
from wsclient import RawClient, upgrade_request

from harpia import ConfigurationError, harpia

# An app defined in the __main__ of a script, with lambdas: fork needs nothing importable.
SCRIPT = """
import os, sys
from harpia import harpia, BackplaneError

app = harpia(pubsub=sys.argv[1] if sys.argv[1] != "-" else None)

def on_open(ws):
    ws.subscribe("all")
    ws.send(f"pid {os.getpid()}")

app.ws("/", {"open": on_open, "message": lambda ws, message: app.publish("all", message)})

if __name__ == "__main__":
    try:
        app.listen(host="127.0.0.1", port=int(sys.argv[2]), workers=2)
    except Exception as exc:
        print("FAILED", type(exc).__name__, exc, flush=True)
        sys.exit(7)
    print("STOPPED", flush=True)
"""


# Each worker's ASGI lifespan startup takes a while: a worker is up only once it has run.
SLOW_START_SCRIPT = SCRIPT.replace("""app.ws("/", {""", """
async def slow_start(scope, receive, send):
    import asyncio
    assert scope["type"] == "lifespan"
    await receive()
    await asyncio.sleep(1.5)
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})

app.mount("/asgi", slow_start)
app.ws("/", {""")


class Cluster:
    """The script as a subprocess: its stdout and stderr go to files the test reads."""

    def __init__(self, tmp_path: Path, pubsub: str, port: int = 0, script_text: str = SCRIPT) -> None:
        script = tmp_path / "app.py"
        script.write_text(script_text)
        self.out_path = tmp_path / "out.txt"
        self.err_path = tmp_path / "err.txt"
        self.out = self.out_path.open("wb")
        self.err = self.err_path.open("wb")
        self.process = subprocess.Popen([sys.executable, str(script), pubsub, str(port)],
                                        stdout=self.out, stderr=self.err, cwd=tmp_path)
        self.port = 0
        self.pids: set[int] = set()

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    async def started(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on ws://(?:127\.0\.0\.1)?:(\d+) with 2 workers \(pids (\d+), (\d+)\)",
                              self.stdout())
            if match:
                self.port = int(match.group(1))
                self.pids = {int(match.group(2)), int(match.group(3))}
                return
            assert self.process.poll() is None, self.stdout() + self.stderr()
            await asyncio.sleep(0.05)
        raise AssertionError("the workers did not start: " + self.stdout() + self.stderr())

    async def wait(self, timeout: float = 15.0) -> int:
        code = await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)
        self.out.close()
        self.err.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.out.close()
        self.err.close()


async def wait_gone(pids: set[int], timeout: float, what: str) -> None:
    """Until no process of ``pids`` exists any more (``what`` names the failure)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"worker {pid} {what}"
            await asyncio.sleep(0.05)


def starve_descriptors(pid: int) -> Callable[[], None]:
    """Lower process ``pid``'s descriptor limit to its lowest free descriptor number, so that
    it can open no new one (poll(2) still takes the five a supervisor of two waits on: nfds
    above the limit would be EINVAL).  Returns what puts the limit back."""
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    held = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = min(set(range(len(held) + 1)) - held)
    assert lowest_free >= 5, held
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
    return lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)


async def greeting_pid(port: int, address: str = "127.0.0.1", timeout: float = 5.0) -> int:
    """Connect to ``address``, upgrade, and return the pid the worker greets with."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (address, port))
    client = RawClient(sock)
    await client.send(upgrade_request("/"))
    response = await client.read_response(timeout)
    assert response.status == 101, response
    pid = await greeted_pid(client, timeout)
    client.close()
    return pid


async def greeted_pid(client: RawClient, timeout: float = 5.0) -> int:
    """The pid in the greeting a worker sends ``client`` when it opens."""
    greeting = await client.recv_message(timeout)
    assert isinstance(greeting, str) and greeting.startswith("pid ")
    return int(greeting.split()[1])


async def connect(port: int, n: int) -> list[tuple[RawClient, int]]:
    """``n`` clients, each with the pid of the worker that took it."""
    clients = await asyncio.gather(*(RawClient.open(port) for _ in range(n)))
    result = []
    for client in clients:
        result.append((client, await greeted_pid(client)))
    return result


def test_workers_spread_broadcast_restart_and_stop(redis_server: RedisServer, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, redis_server.url)

    async def scenario() -> None:
        await cluster.started()
        clients = await connect(cluster.port, 24)
        # The kernel spreads connections over both workers' sockets (SO_REUSEPORT).
        assert {pid for _, pid in clients} == cluster.pids
        deadline = time.monotonic() + 5
        while redis_server.numsub("harpia:all") != {"harpia:all": 2}:
            assert time.monotonic() < deadline, "both workers subscribe to the topic"
            await asyncio.sleep(0.02)
        # A broadcast from a client of either worker reaches all 24, once each.
        first = next(c for c, pid in clients if pid == min(cluster.pids))
        other = next(c for c, pid in clients if pid == max(cluster.pids))
        await first.send_text("one")
        await other.send_text("two")
        for client, _ in clients:
            assert sorted([await client.recv_message(), await client.recv_message()]) == ["one", "two"]
        for client, _ in clients:
            with pytest.raises(asyncio.TimeoutError):
                await client.recv_message(timeout=0.05)

        # A worker that dies is logged and replaced; its clients lose their connection only.
        victim = min(cluster.pids)
        os.kill(victim, signal.SIGKILL)
        survivor = cluster.pids - {victim}
        deadline = time.monotonic() + 10
        while "restarting it" not in cluster.stderr():
            assert time.monotonic() < deadline, cluster.stderr()
            await asyncio.sleep(0.05)
        assert f"worker 0 (pid {victim}) exited with signal SIGKILL" in cluster.stderr()
        replacement: set[int] = set()
        newcomers: list[tuple[RawClient, int]] = []
        while not replacement:
            assert time.monotonic() < deadline, "no connection reached the new worker"
            newcomers += await connect(cluster.port, 8)
            replacement = {pid for _, pid in newcomers} - cluster.pids
        cluster.pids = survivor | replacement
        while redis_server.numsub("harpia:all") != {"harpia:all": 2}:
            assert time.monotonic() < deadline, "the new worker subscribes too"
            await asyncio.sleep(0.02)
        live = [(c, pid) for c, pid in clients if pid != victim]
        sender = next(c for c, pid in newcomers if pid in replacement)
        await sender.send_text("three")
        for client, _ in live + newcomers:
            assert await client.recv_message() == "three"

        # One SIGTERM to the parent: every worker closes its clients with 1001, all exit.
        cluster.process.send_signal(signal.SIGTERM)
        for client, _ in live + newcomers:
            frame = await client.recv_close()
            assert frame.close_code == 1001
            client.close()
        assert await cluster.wait() == 0
        assert "STOPPED" in cluster.stdout()
        for pid in cluster.pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    try:
        asyncio.run(scenario())
    finally:
        cluster.kill()


def test_without_backplane_a_publish_stays_in_its_worker_and_workers_die_with_the_parent(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "-")

    async def scenario() -> None:
        await cluster.started()
        clients = await connect(cluster.port, 16)
        sender, home = clients[0]
        await sender.send_text("local")

        async def check(client: RawClient, pid: int) -> None:
            if pid == home:
                assert await client.recv_message() == "local"
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await client.recv_message(timeout=0.3)
            client.close()

        await asyncio.gather(*(check(client, pid) for client, pid in clients))
        # The supervisor killed outright: the workers do not outlive it (Linux).
        cluster.process.kill()
        await cluster.wait()
        await wait_gone(cluster.pids, 10, "outlived its parent")

    try:
        asyncio.run(scenario())
    finally:
        cluster.kill()


def test_workers_are_announced_only_once_every_one_accepts(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "-", script_text=SLOW_START_SCRIPT)

    async def scenario() -> None:
        await cluster.started()
        # One attempt each, right after the announcement: a worker reported ready before its
        # socket listens would refuse these (or leave them all to the other worker).
        clients = await connect(cluster.port, 16)
        assert {pid for _, pid in clients} == cluster.pids
        for client, _ in clients:
            client.close()
        cluster.process.send_signal(signal.SIGTERM)
        assert await cluster.wait() == 0

    try:
        asyncio.run(scenario())
    finally:
        cluster.kill()


# A worker that has served for a second counts as long-lived: restarted at once.
QUICK_RESTART_SCRIPT = SCRIPT.replace("if __name__", """import harpia.workers
harpia.workers.FAST_FAILURE = 1.0

if __name__""")


def test_connections_queued_at_a_dead_worker_are_answered_by_its_replacement(tmp_path: Path) -> None:
    # Each slot's listening socket belongs to the parent: a worker's death does not reset
    # the connections the kernel queued for it.  (A socket per worker would be closed with
    # it, and every connection in its queue reset.)
    cluster = Cluster(tmp_path, "-", script_text=QUICK_RESTART_SCRIPT)

    async def scenario() -> None:
        await cluster.started()
        await asyncio.sleep(1.2)
        victim = min(cluster.pids)
        os.kill(victim, signal.SIGSTOP)
        waiting = [asyncio.ensure_future(greeting_pid(cluster.port, timeout=20)) for _ in range(24)]
        await asyncio.sleep(0.5)
        assert not all(task.done() for task in waiting), "some land in the stopped worker's queue"
        os.kill(victim, signal.SIGKILL)
        pids = await asyncio.gather(*waiting)
        replacement = set(pids) - cluster.pids
        assert len(replacement) == 1 and victim not in pids, (pids, cluster.pids)
        assert "restarting it\n" in cluster.stderr(), cluster.stderr()
        cluster.pids = (cluster.pids - {victim}) | replacement
        cluster.process.send_signal(signal.SIGTERM)
        assert await cluster.wait() == 0

    try:
        asyncio.run(scenario())
    finally:
        cluster.kill()


def test_a_worker_that_cannot_be_restarted_yet_is_tried_again(tmp_path: Path) -> None:
    # The supervisor out of descriptors when a worker dies: it cannot bind the slot's
    # socket again (or make the worker's pipe).  It logs that, keeps the other worker
    # serving, and restarts the slot once it can.
    cluster = Cluster(tmp_path, "-", script_text=QUICK_RESTART_SCRIPT)

    async def scenario() -> None:
        await cluster.started()
        await asyncio.sleep(1.2)
        restore = starve_descriptors(cluster.process.pid)
        victim = min(cluster.pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while "cannot restart" not in cluster.stderr():
            assert time.monotonic() < deadline, cluster.stderr()
            await asyncio.sleep(0.05)
        survivor = cluster.pids - {victim}
        assert {pid for _, pid in await connect(cluster.port, 8)} == survivor
        restore()
        replacement: set[int] = set()
        while not replacement:
            assert time.monotonic() < deadline, "no connection reached the new worker"
            replacement = {pid for _, pid in await connect(cluster.port, 8)} - survivor
        cluster.pids = survivor | replacement
        cluster.process.send_signal(signal.SIGTERM)
        assert await cluster.wait() == 0

    try:
        asyncio.run(scenario())
    finally:
        cluster.kill()


@pytest.mark.parametrize("transport", ["harpia", "loop"])
def test_workers_serve_every_address_of_their_host(tmp_path: Path, transport: str) -> None:
    # host="" is every address, IPv4 and IPv6: a listening socket each, in every slot
    # (through the loop, a server each).
    script = SCRIPT.replace('host="127.0.0.1"', 'host=""').replace(
        "harpia(pubsub=", f"harpia(loop_transport={transport == 'loop'}, pubsub=")
    cluster = Cluster(tmp_path, "-", script_text=script)

    async def scenario() -> None:
        await cluster.started()
        for address in ["127.0.0.1", "::1"]:
            pids = await asyncio.gather(*(greeting_pid(cluster.port, address) for _ in range(16)))
            assert set(pids) == cluster.pids, (address, pids)
        cluster.process.send_signal(signal.SIGTERM)
        assert await cluster.wait() == 0

    try:
        asyncio.run(scenario())
    finally:
        cluster.kill()


def test_a_worker_that_cannot_start_fails_listen(tmp_path: Path) -> None:
    # Redis is not there: each worker's backplane fails; the parent raises the worker's error.
    cluster = Cluster(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    try:
        code = asyncio.run(cluster.wait(30))
    finally:
        cluster.kill()
    assert code == 7
    assert "FAILED BackplaneError cannot reach Redis at redis://127.0.0.1:" in cluster.stdout()


def test_workers_argument_and_busy_port_fail_in_the_parent() -> None:
    app = harpia()
    with pytest.raises(ConfigurationError, match="workers"):
        app.listen(port=0, workers=0)
    with pytest.raises(ConfigurationError, match="workers"):
        app.listen(port=0, workers="2")  # type: ignore[arg-type]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            app.listen(host="127.0.0.1", port=busy.getsockname()[1], workers=2)
