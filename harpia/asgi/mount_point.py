"""One mounted ASGI app (``Mount``) and what its connections need from the table of mounts
(``MountTable``, which ``mount.AsgiMounts`` is): the HTTP and WebSocket sides depend on
these, not on ``mount``, which builds them."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

from .lifespan import Lifespan
from .options import HttpOptions

if TYPE_CHECKING:
    from ..routing import WebSocketRoute
    from ..server import Listener

__all__ = ["AsgiApp", "Mount", "MountTable"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
#: An ASGI 3 application: ``async def app(scope, receive, send)``.
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class Mount:
    """One mounted ASGI app: its prefix, limits, WebSocket route and lifespan."""

    __slots__ = ("prefix", "root_path", "app", "http", "route", "lifespan")

    def __init__(self, prefix: str, app: AsgiApp, http: HttpOptions, route: WebSocketRoute) -> None:
        self.prefix = prefix
        #: What the app sees as ``scope["root_path"]`` ("" for a mount at "/").
        self.root_path = prefix
        self.app = app
        self.http = http
        self.route = route
        self.lifespan = Lifespan(app, prefix or "/")

    @property
    def state(self) -> dict[str, Any]:
        return self.lifespan.state


class MountTable(Protocol):
    """What an ASGI connection needs from the mounts of its app."""

    #: The request-head limits (request line, header line, headers, head size).
    head_limits: tuple[int, int, int, int]
    #: Longest prefix first.
    mounts: list[Mount]
    #: The ASGI WebSockets in their handshake or open.
    sockets: set[Any]

    def match(self, path: str) -> Mount | None: ...

    def stopping_listener(self, listener: Listener) -> bool: ...

    def connection_ended(self, conn: Any) -> None: ...

    def waiting_for_request(self, conn: Any, reading_head: bool) -> None: ...

    def request_started(self, conn: Any) -> None: ...
