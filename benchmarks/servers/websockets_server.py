"""websockets (asyncio API) benchmark server: /echo echoes every message,
/broadcast relays every message to every connected /broadcast client (sender
included).  --deflate: permessage-deflate with websockets' defaults.

    python websockets_server.py --port 9001 [--deflate]
"""
import argparse

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 64 * 1024 * 1024


async def main(port: int, deflate: bool = False) -> None:
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path
        if path == "/echo":
            try:
                async for message in ws:  # str for text, bytes for binary: sent back as the same type
                    await ws.send(message)
            except ConnectionClosed:  # the client closed with echoes still queued
                pass
        elif path == "/broadcast":
            clients.add(ws)
            try:
                async for message in ws:
                    broadcast(clients, message)  # the documented way to fan out without awaiting each client
            finally:
                clients.discard(ws)
        else:
            await ws.close(1008, "unknown path")

    async with serve(
        handler, "127.0.0.1", port,
        compression="deflate" if deflate else None,
        max_size=MAX_SIZE,
        open_timeout=None,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=None,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    uvloop.run(main(args.port, args.deflate))
