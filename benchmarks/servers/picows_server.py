"""picows benchmark server: /echo echoes every message, /broadcast relays every
message to every connected /broadcast client (sender included).

    python picows_server.py --port 9001
"""
import argparse
import asyncio

import uvloop
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MAX_FRAME = 64 * 1024 * 1024


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type is not WSMsgType.PONG:
            # send() copies the payload into the write buffer, so the parser's
            # memoryview needs no bytes copy. Frames are echoed as they come,
            # with their FIN bit, so fragmented messages stay intact.
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)


class Broadcast(WSListener):
    def __init__(self, clients: list) -> None:
        self.clients = clients

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.clients.append(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.clients.remove(transport)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type is WSMsgType.TEXT or msg_type is WSMsgType.BINARY:
            payload = frame.get_payload_as_memoryview()
            for client in self.clients:
                client.send(msg_type, payload)


async def main(port: int) -> None:
    clients: list = []

    def route(request: WSUpgradeRequest):
        if request.path == b"/echo":
            return Echo()
        if request.path == b"/broadcast":
            return Broadcast(clients)
        return None  # 404

    server = await ws_create_server(
        route, "127.0.0.1", port,
        websocket_handshake_timeout=None,
        enable_auto_ping=False,
        max_frame_size=MAX_FRAME,
    )
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
