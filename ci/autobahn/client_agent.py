#!/usr/bin/env python3
"""harpia's client as the agent of Autobahn|Testsuite's fuzzing server (the client half).

    python3 ci/autobahn/client_agent.py --url ws://127.0.0.1:9001 [--agent harpia-client]

Asks the fuzzing server how many cases it has, runs each one (``/runCase?case=N``) by
echoing every message back with the same type, then asks it to write the reports
(``/updateReports``).  Messages are echoed from the ``message`` handler, the engine's fast
path.  permessage-deflate is offered on every connection, so sections 12 and 13 run too.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import quote

import harpia

#: Section 9 sends messages of up to 16 MiB; leave room.
MAX_PAYLOAD = 64 * 1024 * 1024
#: A case that neither ends nor closes within this long is a harness failure.
CASE_TIMEOUT = 120.0


def echo(ws: harpia.ClientWebSocket, message: str | bytes) -> None:
    ws.send(message)


async def case_count(url: str) -> int:
    async with harpia.connect(f"{url}/getCaseCount") as ws:
        return int(await ws.recv())


async def run_case(url: str, agent: str, case: int) -> tuple[int, str]:
    ws = await harpia.connect(
        f"{url}/runCase?case={case}&agent={quote(agent)}", {"message": echo},
        per_message_deflate=True, max_payload_length=MAX_PAYLOAD,
        backpressure_limit=MAX_PAYLOAD, close_timeout=5.0)
    return await asyncio.wait_for(ws.wait_closed(), CASE_TIMEOUT)


async def update_reports(url: str, agent: str) -> None:
    ws = await harpia.connect(f"{url}/updateReports?agent={quote(agent)}")
    await asyncio.wait_for(ws.wait_closed(), CASE_TIMEOUT)


async def main_async(url: str, agent: str, first: int, last: int | None) -> int:
    count = await case_count(url)
    last = count if last is None else min(last, count)
    print(f"client agent: {count} cases, running {first}-{last} as {agent!r}", flush=True)
    started = time.monotonic()
    for case in range(first, last + 1):
        try:
            await run_case(url, agent, case)
        except (OSError, harpia.HandshakeError, TimeoutError) as exc:
            print(f"client agent: case {case} could not run: {exc!r}", file=sys.stderr, flush=True)
            return 2
        if case % 50 == 0:
            print(f"client agent: {case}/{last} ({time.monotonic() - started:.0f} s)", flush=True)
    await update_reports(url, agent)
    print(f"client agent: done in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:9001")
    parser.add_argument("--agent", default="harpia-client")
    parser.add_argument("--first", type=int, default=1, help="first case number (1-based)")
    parser.add_argument("--last", type=int, default=None, help="last case number")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop
        return uvloop.run(main_async(args.url.rstrip("/"), args.agent, args.first, args.last))
    return asyncio.run(main_async(args.url.rstrip("/"), args.agent, args.first, args.last))


if __name__ == "__main__":
    sys.exit(main())
