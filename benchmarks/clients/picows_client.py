"""picows' client: a WSListener whose on_ws_frame echoes the frame's payload."""
from __future__ import annotations

import argparse

from common import COUNT, Scenario, Stop, run
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        COUNT.n += 1
        transport.send(frame.msg_type, frame.get_payload_as_memoryview())


class Take(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        COUNT.n += 1


async def connect_and_close(url: str, args: argparse.Namespace) -> None:
    transport, _ = await ws_connect(WSListener, url)
    # A code, as the other clients send: picows' default (NO_INFO) puts 1005 on the
    # wire, which servers answer with a protocol error (1002) instead of a clean close.
    transport.send_close(WSCloseCode.OK)
    await transport.wait_disconnected()


async def start_load(url: str, scenario: Scenario, args: argparse.Namespace) -> Stop:
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
    return stop


if __name__ == "__main__":
    run(connect_and_close, start_load)
