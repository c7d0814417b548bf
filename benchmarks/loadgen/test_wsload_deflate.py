"""wsload --deflate against real permessage-deflate servers: websockets' (contexts kept both
ways, an implementation independent of harpia's) and harpia's (no context takeover, one
compression per publish), plus the faults it must catch.

    pytest benchmarks/loadgen
"""
import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.server import serve as sync_serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import e2e  # noqa: E402


@pytest.fixture(scope="module")
def wsload() -> Path:
    return e2e.build_loadgen()


def run(wsload: Path, port: int, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([str(wsload), "--port", str(port), "--warmup", "0", "--timeout", "30", *args],
                          capture_output=True, text=True, timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc.returncode, json.loads(lines[-1]) if lines else {}, proc.stderr


def websockets_server(compression: str | None, corrupt_at: int = 0) -> Iterator[int]:
    clients: set = set()

    def handler(ws) -> None:  # type: ignore[no-untyped-def]
        clients.add(ws)
        try:
            for count, message in enumerate(ws, 1):
                if corrupt_at and count == corrupt_at:
                    message = message[:-1] + ("?" if isinstance(message, str) else b"?")
                targets = list(clients) if ws.request.path == "/broadcast" else [ws]
                for target in targets:
                    target.send(message)
        except Exception:
            pass
        finally:
            clients.discard(ws)

    with sync_serve(handler, "127.0.0.1", 0, compression=compression, max_size=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.socket.getsockname()[1]
        server.shutdown()


@pytest.fixture()
def websockets_deflate() -> Iterator[int]:
    yield from websockets_server("deflate")


@pytest.fixture()
def harpia_deflate() -> Iterator[int]:
    from harpia import harpia

    app = harpia()
    app.ws("/echo", {"message": lambda ws, m: ws.send(m)}, per_message_deflate=True)
    app.ws("/broadcast", {"open": lambda ws: ws.subscribe("all"),
                          "message": lambda ws, m: app.publish("all", m)}, per_message_deflate=True)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    async def main() -> None:
        async with app.serve(port=0) as server:
            port.append(server.port)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    yield port[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


@pytest.mark.parametrize("mode", ["pingpong", "pipeline"])
@pytest.mark.parametrize("size", [100, 16384, 200_000])
def test_echo_through_websockets_deflate(wsload, websockets_deflate, mode, size):
    rc, res, err = run(wsload, websockets_deflate, "--mode", mode, "--conns", "2", "--size", str(size),
                       "--text", "--json", "--deflate", "--messages", "200")
    assert rc == 0, err
    assert res["deflate"] is True and res["inflates"] >= 200 and res["inflate_cache_hits"] == 0


def test_echo_and_broadcast_through_harpia_deflate(wsload, harpia_deflate):
    rc, res, err = run(wsload, harpia_deflate, "--mode", "pipeline", "--conns", "3", "--depth", "4",
                       "--size", "16384", "--text", "--json", "--deflate", "--messages", "300")
    assert rc == 0, err
    assert res["inflates"] >= 300
    rc, res, err = run(wsload, harpia_deflate, "--mode", "broadcast", "--conns", "20", "--depth", "8",
                       "--size", "4096", "--text", "--json", "--deflate", "--messages", "200")
    assert rc == 0, err
    # One compression per publish: most deliveries are the very same bytes.
    assert res["inflate_cache_hits"] > res["inflates"]


def test_binary_and_incompressible(wsload, harpia_deflate):
    rc, res, err = run(wsload, harpia_deflate, "--mode", "pingpong", "--conns", "1", "--size", "3000",
                       "--binary", "--deflate", "--messages", "100")
    assert rc == 0, err     # random bytes: harpia answers uncompressed, wsload accepts both


def test_server_without_deflate_is_an_error(wsload):
    for port in websockets_server(None):
        rc, res, err = run(wsload, port, "--mode", "pingpong", "--deflate", "--messages", "10")
    assert rc == 1 and "did not accept permessage-deflate" in err


def test_corrupted_echo_is_caught(wsload):
    for port in websockets_server("deflate", corrupt_at=5):
        rc, res, err = run(wsload, port, "--mode", "pingpong", "--size", "500", "--text", "--json",
                           "--deflate", "--messages", "50")
    assert rc == 2 and "payload byte" in err
