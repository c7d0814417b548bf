"""The settings of one ``app.mount(path, asgi_app, **options)``.

The HTTP side has its own limits (below); the WebSocket side takes the same options as an
``app.ws`` route (``max_payload_length``, ``backpressure_limit``, ``per_message_deflate``,
``idle_timeout``...), validated by ``route_options``.  Request-head limits (size, header
count, the time to send a head) are the app's, shared with the upgrade path.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from ..options import RouteOptions, route_options

__all__ = ["HttpOptions", "mount_options"]


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Limits of the ASGI HTTP side of a mount."""

    #: Largest request body (Content-Length or chunked) an ASGI app is handed; over it: 413.
    #: 16 MiB as the WebSocket side's ``max_payload_length``: uploads fit, floods do not.
    max_body_size: int = 16 * 1024 * 1024
    #: Seconds an idle keep-alive connection stays open waiting for its next request.
    #: 5 s as uvicorn: long enough for a page's burst of requests, short enough to shed idlers.
    keep_alive_timeout: float = 5.0
    #: Request body bytes read ahead of the app's ``receive()`` before reading pauses.
    #: 64 KiB: keeps an upload streaming without holding more than that per connection.
    body_buffer: int = 64 * 1024


_HTTP_TYPES: dict[str, tuple[type, ...]] = {
    "max_body_size": (int,),
    "keep_alive_timeout": (int, float),
    "body_buffer": (int,),
}


def mount_options(options: Mapping[str, Any]) -> tuple[HttpOptions, RouteOptions]:
    """Split and validate the keyword arguments of ``app.mount``."""
    http: dict[str, Any] = {}
    websocket: dict[str, Any] = {}
    for key, value in options.items():
        types = _HTTP_TYPES.get(key)
        if types is None:
            if key in ("upgrade", "data", "origins", "subprotocols"):
                raise ConfigurationError(
                    f"mount option {key!r} is not supported: the ASGI app decides the handshake")
            websocket[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not isinstance(value, types) or value <= 0:
            names = " or ".join(t.__name__ for t in types)
            raise ConfigurationError(f"mount option {key!r} must be a positive {names}")
        http[key] = value
    return HttpOptions(**http), route_options(websocket)
