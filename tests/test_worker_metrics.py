"""``/metrics`` with ``workers=2``: every scrape gives the totals of both workers, with
per-worker series; counters never go backwards, even across a worker's restart."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wsclient import TEXT, RawClient

from harpia.worker_metrics import total

SCRIPT = """
import os
from harpia import harpia

app = harpia()
app.ws("/", {"open": lambda ws: (ws.subscribe("room"), ws.send(f"pid {os.getpid()}"))})
app.expose_metrics(topics=10)
app.listen(host="127.0.0.1", port=0, workers=2)
"""


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert match, f"{series} not in:\n{text}"
    return float(match.group(1))


async def scrape(port: int) -> str:
    client = await RawClient.connect(port)
    await client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await client.read_response(10.0)
    client.sock.close()
    assert response.status == 200
    return response.body.decode()


def test_total_adds_counters_and_live_gauges() -> None:
    workers = [
        {"worker": 0, "pid": 1, "retired": False,
         "stats": {"connections_open": 2, "connections_opened": 5, "messages_in": 7,
                   "closes_by_code": {"1000": 3}, "handshake_failures_by_status": {},
                   "topics": {"a": 2}}},
        {"worker": 0, "pid": 2, "retired": True,
         "stats": {"connections_open": 0, "connections_opened": 4, "messages_in": 1,
                   "closes_by_code": {"1000": 1, "1006": 3}, "handshake_failures_by_status": {"429": 1},
                   "topics": {}}},
    ]
    summed = total(workers)
    assert summed["connections_open"] == 2 and summed["connections_opened"] == 9
    assert summed["messages_in"] == 8 and summed["closes_by_code"] == {1000: 4, 1006: 3}
    assert summed["handshake_failures_by_status"] == {429: 1} and summed["topics"] == {"a": 2}


@pytest.mark.timeout(120)
async def test_fifty_scrapes_agree_across_workers(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SCRIPT)
    log = (tmp_path / "log.txt").open("wb")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"listening on ws://127.0.0.1:(\d+) with 2 workers \(pids (\d+), (\d+)\)",
                                      (tmp_path / "log.txt").read_text())):
            assert process.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.05)
        port = int(match.group(1))
        clients: list[tuple[RawClient, int]] = []
        while len({pid for _, pid in clients}) < 2 or len(clients) < 20:
            assert time.monotonic() < deadline, "the connections did not reach both workers"
            client = await RawClient.open(port)
            frame = await client.recv_frame()
            assert frame.opcode == TEXT
            clients.append((client, int(frame.payload.split()[1])))
        opened = len(clients)
        # Within a publishing period every worker has written what it holds.
        while value(await scrape(port), "harpia_connections_open") != opened:
            assert time.monotonic() < deadline, "the totals never settled"
            await asyncio.sleep(0.1)
        seen_pids: set[str] = set()
        last_opened = 0.0
        for _ in range(50):
            text = await scrape(port)
            assert value(text, "harpia_connections_open") == opened
            assert value(text, 'harpia_topic_subscribers{topic="room"}') == opened
            assert value(text, "harpia_workers") == 2
            per_worker = re.findall(r'^harpia_worker_connections_open\{worker="(\d)",pid="(\d+)"\} (\S+)$',
                                    text, re.M)
            assert sorted(w for w, _, _ in per_worker) == ["0", "1"]
            assert sum(float(n) for _, _, n in per_worker) == opened
            seen_pids |= {pid for _, pid, _ in per_worker}
            counted = value(text, "harpia_connections_opened_total")
            assert counted >= last_opened and counted >= opened
            last_opened = counted
        assert seen_pids == {str(pid) for _, pid in clients}

        # A worker dies: its clients are gone, what it counted stays counted.
        victim = clients[0][1]
        os.kill(victim, signal.SIGKILL)
        survivors = sum(1 for _, pid in clients if pid != victim)
        while True:
            try:
                text = await scrape(port)
            except (EOFError, ConnectionError):   # it landed on the dying worker's queue
                continue
            if value(text, "harpia_connections_open") == survivors and value(text, "harpia_workers") == 2 \
                    and str(victim) not in text:
                break
            assert value(text, "harpia_connections_opened_total") >= last_opened
            assert time.monotonic() < deadline + 30, text
            await asyncio.sleep(0.1)
        assert value(text, "harpia_connections_opened_total") >= last_opened
        for client, _ in clients:
            client.sock.close()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    assert process.returncode == 0, (tmp_path / "log.txt").read_text()
