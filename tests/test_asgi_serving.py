"""A mount under TLS, with workers=2, behind the Redis backplane, and from the command line."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme
from asgi_apps import HttpClient, make_app
from redis_server import RedisServer, redis_server  # noqa: F401 - a fixture
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pem_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(cert_path), append=True)
    return {"key": str(key_path), "cert": str(cert_path)}


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_https_and_wss_with_shared_topics(pem_files: dict[str, str],
                                                client_context: ssl.SSLContext) -> None:
    app = make_app()
    async with app.serve(port=0, tls=pem_files) as server:
        client = await HttpClient.open(server.port, client_context)
        status, _, body = await client.request("GET", "/items/5?q=tls")
        assert (status, json.loads(body)) == (200, {"item_id": 5, "q": "tls"})
        status, headers, body = await client.request("GET", "/stream?n=4&size=3")
        assert (status, body) == (200, b"aaabbbcccddd")
        status, _, body = await client.request("POST", "/items", b'{"name": "a", "price": 1}',
                                               [("Content-Type", "application/json")])
        assert json.loads(body)["created"] is True
        await client.close()
        base = f"wss://localhost:{server.port}"
        async with connect(f"{base}/ws/room", ssl=client_context) as asgi_ws, \
                connect(f"{base}/native", ssl=client_context) as native_ws:
            assert await asyncio.wait_for(asgi_ws.recv(), 10) == "joined"
            for _ in range(200):
                if app.websocket.subscriber_count("room") == 2:
                    break
                await asyncio.sleep(0.01)
            await native_ws.send("over tls")
            assert await asyncio.wait_for(asgi_ws.recv(), 10) == "native says over tls"
        async with connect(f"{base}/ws/echo", ssl=client_context, subprotocols=["p1"]) as ws:
            assert ws.subprotocol == "p1"
            await ws.send("secure echo")
            assert await asyncio.wait_for(ws.recv(), 10) == "secure echo"


# A plain FastAPI app, no harpia in it: `python -m harpia svc:api` is simply its server.
PLAIN = """
import os
from contextlib import asynccontextmanager
from fastapi import FastAPI, WebSocket

@asynccontextmanager
async def lifespan(api):
    with open(os.path.join(os.environ["EVENTS_DIR"], f"up-{os.getpid()}"), "w"):
        pass
    yield {"pid": os.getpid()}
    with open(os.path.join(os.environ["EVENTS_DIR"], f"down-{os.getpid()}"), "w"):
        pass

api = FastAPI(lifespan=lifespan)

@api.get("/pid")
async def pid(request: __import__("fastapi").Request):
    return {"pid": os.getpid(), "lifespan_pid": request.state.pid}

@api.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text(str(os.getpid()))
    await websocket.close()
"""


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_cli_serves_a_plain_asgi_app_with_two_workers(tmp_path: Path, tls: bool, ca: trustme.CA,
                                                      pem_files: dict[str, str],
                                                      client_context: ssl.SSLContext) -> None:
    (tmp_path / "svc.py").write_text(PLAIN)
    events = tmp_path / "events"
    events.mkdir()
    out = (tmp_path / "out.txt").open("wb")
    env = dict(os.environ, EVENTS_DIR=str(events),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    tls_args = ["--tls-cert", pem_files["cert"], "--tls-key", pem_files["key"]] if tls else []
    context = client_context if tls else None
    process = subprocess.Popen([sys.executable, "-m", "harpia", "svc:api", "--port", "0",
                                "--workers", "2", *tls_args], cwd=tmp_path, stdout=out,
                               stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        port = 0
        while not port:
            assert time.monotonic() < deadline, (tmp_path / "out.txt").read_text()
            assert process.poll() is None, (tmp_path / "out.txt").read_text()
            match = re.search(r"listening on wss?://127\.0\.0\.1:(\d+)", (tmp_path / "out.txt").read_text())
            port = int(match.group(1)) if match else 0
            time.sleep(0.05)

        async def scenario() -> set[int]:
            pids = set()
            for _ in range(40):
                client = await HttpClient.open(port, context)
                status, _, body = await client.request("GET", "/pid")
                answer = json.loads(body)
                assert status == 200 and answer["pid"] == answer["lifespan_pid"]
                pids.add(answer["pid"])
                await client.close()
                if len(pids) == 2:
                    break
            scheme, host = ("wss", "localhost") if tls else ("ws", "127.0.0.1")
            async with connect(f"{scheme}://{host}:{port}/ws", ssl=context) as ws:
                assert int(await asyncio.wait_for(ws.recv(), 10)) in pids
            return pids

        pids = asyncio.run(scenario())
        assert len(pids) == 2                        # the kernel spread them over both workers
        assert {f"up-{pid}" for pid in pids} <= set(os.listdir(events))
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert {f"down-{pid}" for pid in pids} <= set(os.listdir(events))  # each worker's shutdown
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        out.close()


BACKPLANE = """
import sys
sys.path.insert(0, sys.argv[3])
from asgi_apps import make_app
app = make_app()
app.use_pubsub(sys.argv[1])
app.listen(host="127.0.0.1", port=int(sys.argv[2]), workers=2)
"""


def test_workers_share_topics_through_redis(redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    from redis_server import free_port

    (tmp_path / "svc.py").write_text(BACKPLANE)
    port = free_port()
    out = (tmp_path / "out.txt").open("wb")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "svc.py", redis_server.url, str(port),
                                str(ROOT / "tests")], cwd=tmp_path, stdout=out,
                               stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in (tmp_path / "out.txt").read_text():
            assert time.monotonic() < deadline and process.poll() is None, \
                (tmp_path / "out.txt").read_text()
            time.sleep(0.05)

        async def scenario() -> None:
            url = f"ws://127.0.0.1:{port}"
            rooms = [await connect(f"{url}/ws/room") for _ in range(12)]  # both workers get some
            for room in rooms:
                assert await asyncio.wait_for(room.recv(), 10) == "joined"
            async with connect(f"{url}/native") as native:
                # Wait until both workers subscribed "room" on Redis (ASGI and native alike).
                deadline = time.monotonic() + 10
                while redis_server.numsub("harpia:room") != {"harpia:room": 2}:
                    assert time.monotonic() < deadline, redis_server.numsub("harpia:room")
                    await asyncio.sleep(0.05)
                await native.send("everyone")
                for room in rooms:
                    assert await asyncio.wait_for(room.recv(), 10) == "native says everyone"
            for room in rooms:
                await room.close()

        asyncio.run(scenario())
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        out.close()


def test_cli_tells_asgi_apps_from_factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harpia import App
    from harpia.__main__ import is_asgi_app, load_app

    async def plain(scope: object, receive: object, send: object) -> None:
        pass

    def factory() -> App:
        return App()

    from asgi_apps import make_api
    assert is_asgi_app(plain) and is_asgi_app(make_api())
    assert not is_asgi_app(factory) and not is_asgi_app(App()) and not is_asgi_app(print)
    (tmp_path / "cli_targets.py").write_text(
        "from harpia import harpia\n"
        "async def asgi(scope, receive, send):\n    pass\n"
        "def make_asgi():\n    return asgi\n"
        "def make_app():\n    return harpia()\n"
        "nothing = 42\n")
    monkeypatch.chdir(tmp_path)
    for attribute in ("asgi", "make_asgi"):
        served = load_app(f"cli_targets:{attribute}")
        assert served.asgi is not None and served.asgi.mounts[0].app.__name__ == "asgi"
    assert load_app("cli_targets:make_app").asgi is None
    with pytest.raises(SystemExit, match="nor an ASGI app"):
        load_app("cli_targets:nothing")
