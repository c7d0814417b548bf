"""A real browser: headless Chromium opens the chat page in two tabs that talk.

Driven over the DevTools protocol (itself a WebSocket) with the ``websockets`` client.
ci/test installs Debian's ``chromium``; without it this test fails, it does not skip.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from chat import make_app  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-port=0",
]


class DevTools:
    """Just enough of the Chrome DevTools protocol: open tabs, evaluate JavaScript."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        request_id = next(self.ids)
        message: dict[str, Any] = {"id": request_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == request_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def open_tab(self, url: str) -> str:
        target = await self.call("Target.createTarget", url=url)
        attached = await self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        return str(attached["sessionId"])

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", session, expression=expression,
                                 returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, session: str, expression: str, timeout: float = 15.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(session, expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for: {expression}")
            await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
async def test_two_tabs_chat_through_harpia(deflate: bool) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is required for the browser test (ci/test installs it)"
    app = make_app(per_message_deflate=deflate)
    async with app.serve(port=0) as server:
        # Chromium helpers may still write to the profile as it exits: cleanup is best-effort.
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
            process = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                port_file = Path(profile) / "DevToolsActivePort"
                for _ in range(300):
                    if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                        break
                    await asyncio.sleep(0.05)
                port, path = port_file.read_text().splitlines()[:2]
                async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as cdp_ws:
                    cdp = DevTools(cdp_ws)
                    base = f"http://127.0.0.1:{server.port}/"
                    connected = ("document.getElementById('status')"
                                 ".textContent.startsWith('connected')")
                    alice = await cdp.open_tab(base + "?name=alice")
                    await cdp.wait_for(alice, connected)
                    bob = await cdp.open_tab(base + "?name=bob")
                    await cdp.wait_for(bob, connected)
                    await cdp.wait_for(alice, "document.getElementById('log')"
                                              ".textContent.includes('bob joined')")
                    await cdp.evaluate(alice, """
                        document.querySelector('input[name=text]').value = 'hello bob';
                        document.getElementById('send').requestSubmit();
                    """)
                    seen = await cdp.wait_for(
                        bob, "document.getElementById('log').textContent.includes("
                             "'alice: hello bob') && document.getElementById('log').textContent")
                    assert "Welcome to the chat, bob!" in seen
                    assert len(app.websocket.connections) == 2
                    # The page's WebSocket really is harpia's: the server sees both tabs.
                    names = sorted(ws.data.username for ws in app.websocket.connections)
                    assert names == ["alice", "bob"]
                    # Chromium offers permessage-deflate; the server accepts it only if asked.
                    expected = "permessage-deflate; server_no_context_takeover; " \
                               "client_no_context_takeover" if deflate else None
                    assert [ws.extensions for ws in app.websocket.connections] == [expected] * 2
                    assert await cdp.evaluate(bob, "ws.extensions") == (expected or "")
                    # Long enough to be compressed both ways (the default threshold is 128 B).
                    long_text = "compressible words, " * 40
                    await cdp.evaluate(bob, f"""
                        document.querySelector('input[name=text]').value = '{long_text}';
                        document.getElementById('send').requestSubmit();
                    """)
                    await cdp.wait_for(alice, "document.getElementById('log').textContent"
                                              f".includes('bob: {long_text.strip()}')")
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
