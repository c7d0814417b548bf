"""picows' client: a WSListener whose on_ws_frame echoes the frame's payload."""
from __future__ import annotations

import asyncio

import uvloop
from common import SCENARIOS, Counter, measure, parse_args
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        Counter.n += 1
        transport.send(frame.msg_type, frame.get_payload_as_memoryview())


class Take(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        Counter.n += 1


async def connect_loop(url: str, running: list[bool]) -> None:
    while running[0]:
        transport, _ = await ws_connect(WSListener, url)
        # A code, as the other clients send: picows' default (NO_INFO) puts 1005 on the
        # wire, which servers answer with a protocol error (1002) instead of a clean close.
        transport.send_close(WSCloseCode.OK)
        await transport.wait_disconnected()
        Counter.n += 1


async def main() -> None:
    args = parse_args()
    scenario = SCENARIOS[args.scenario]
    url = args.url + scenario.path
    if args.scenario == "connect":
        running = [True]
        tasks = [asyncio.ensure_future(connect_loop(url, running)) for _ in range(scenario.conns)]

        async def stop_connects() -> None:
            running[0] = False
            await asyncio.gather(*tasks)
        await measure(Counter, args.seconds, args.warmup, stop_connects)
        return
    listener = Echo if scenario.inflight else Take
    transports = [(await ws_connect(listener, url, max_frame_size=1 << 24))[0]
                  for _ in range(scenario.conns)]
    payload = b"x" * scenario.size
    for transport in transports:
        for _ in range(scenario.inflight):
            transport.send(WSMsgType.BINARY, payload)

    async def stop() -> None:
        for transport in transports:
            transport.disconnect()
    await measure(Counter, args.seconds, args.warmup, stop)


if __name__ == "__main__":
    uvloop.run(main())
