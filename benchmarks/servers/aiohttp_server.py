"""aiohttp benchmark server: /echo echoes every message, /broadcast relays every
message to every connected /broadcast client (sender included). Runs on uvloop.

--deflate: permessage-deflate (compress=True).

    python aiohttp_server.py --port 9001 [--deflate]
"""
import argparse

import uvloop
from aiohttp import WSMsgType, web

MAX_SIZE = 64 * 1024 * 1024


DEFLATE = False  # --deflate


def new_ws() -> web.WebSocketResponse:
    # No compression (unless --deflate), no heartbeat, no receive timeout; autoping answers pings.
    return web.WebSocketResponse(compress=DEFLATE, max_msg_size=MAX_SIZE, heartbeat=None, receive_timeout=None)


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = new_ws()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def broadcast(request: web.Request) -> web.WebSocketResponse:
    clients: list[web.WebSocketResponse] = request.app["clients"]
    ws = new_ws()
    await ws.prepare(request)
    clients.append(ws)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                data, opcode = msg.data.encode(), WSMsgType.TEXT  # encode once, not once per client
            elif msg.type is WSMsgType.BINARY:
                data, opcode = msg.data, WSMsgType.BINARY
            else:
                continue
            for client in list(clients):  # a send may yield; the list may change meanwhile
                if not client.closed:
                    await client.send_frame(data, opcode)
    finally:
        clients.remove(ws)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    port = args.port
    global DEFLATE
    DEFLATE = args.deflate
    app = web.Application()
    app["clients"] = []
    app.add_routes([web.get("/echo", echo), web.get("/broadcast", broadcast)])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                shutdown_timeout=1.0, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
