"""harpia's own ``app.get`` routes on a connection the ASGI side serves.

A keep-alive connection that started with an ASGI request may ask for ``/health`` next:
harpia's routes win over a mount on every request, not only the first.  Such a request
runs as a small ASGI app around the route's handler, so framing, keep-alive and
pipelining stay in one place (``HttpConnection``).
"""
from __future__ import annotations

import inspect
import json
import logging
from typing import Any

from ..http_head import Headers, RequestHead
from ..http_response import Response
from ..request import Request
from ..routing import HttpRoute, WebSocketRoute

__all__ = ["native_route_app"]

logger = logging.getLogger("harpia")

_TEXT = b"text/plain; charset=utf-8"


def native_route_app(route: HttpRoute | WebSocketRoute, params: dict[str, str], secure: bool) -> Any:
    """An ASGI app answering one request with harpia's ``route``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if route.kind == "ws":
            await _plain(send, 426, b"this path speaks WebSocket: send an Upgrade request\n",
                         [(b"upgrade", b"websocket"), (b"sec-websocket-version", b"13")])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        http_route: HttpRoute = route  # type: ignore[assignment]
        query = scope["query_string"].decode("latin-1")
        raw_path = scope["raw_path"].decode("latin-1")
        head = RequestHead(scope["method"], f"{raw_path}?{query}" if query else raw_path,
                           raw_path, query, f"HTTP/{scope['http_version']}",
                           Headers((n.decode("latin-1"), v.decode("latin-1"))
                                   for n, v in scope["headers"]))
        request = Request(head, params=params, remote_address=scope["client"], secure=secure)
        try:
            result = http_route.handler(request) if http_route.arity else http_route.handler()
            if inspect.isawaitable(result):
                result = await result
            status, body, content_type, headers = _answer(http_route, result)
        except Exception:
            logger.exception("error in the handler of GET %s", http_route.pattern)
            await _plain(send, 500, b"internal server error\n", [])
            return
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
            *headers]})
        await send({"type": "http.response.body", "body": body})

    return app


def _answer(route: HttpRoute, result: Any) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
    if isinstance(result, Response):
        body = result.body.encode() if isinstance(result.body, str) else bytes(result.body)
        content_type = result.content_type or route.content_type or _content_type(result.body)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in result.headers.items()
                   if k.lower() not in ("content-length", "content-type", "transfer-encoding")]
        return result.status, body, content_type, headers
    if isinstance(result, (dict, list)):
        return 200, json.dumps(result).encode(), route.content_type or "application/json", []
    if isinstance(result, (str, bytes)):
        body = result.encode() if isinstance(result, str) else result
        return 200, body, route.content_type or _content_type(result), []
    if result is None:
        return 200, b"", route.content_type or "text/plain; charset=utf-8", []
    raise TypeError(f"GET {route.pattern} returned {type(result).__name__}; return str, bytes, "
                    f"dict, list or harpia.Response")


def _content_type(body: str | bytes) -> str:
    return "text/plain; charset=utf-8" if isinstance(body, str) else "application/octet-stream"


async def _plain(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", _TEXT), *headers]})
    await send({"type": "http.response.body", "body": body})
