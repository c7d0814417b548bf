"""What a type checker sees of ``app.ws(path, handlers)``.

A mapping of handlers is checked key by key against ``WebSocketHandlers[T]``, so a handler
with the wrong signature is a type error.  An object with handler methods (``class Game:
def open(self, ws): ...``) matches one of the one-method protocols below; a dict has none
of those attributes, so a wrong dict cannot slip through as "some object".  Binding the
handlers at run time is ``handlers.bind_handlers``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypedDict, TypeVar

from .connection import ServerWebSocket

__all__ = ["WebSocketHandlers", "HandlerObject"]

T = TypeVar("T")

Message = str | bytes

_OpenHandler = Callable[["ServerWebSocket[T]"], object] | Callable[[], object]
_MessageHandler = (
    Callable[["ServerWebSocket[T]", Message], object]
    | Callable[["ServerWebSocket[T]"], object]
    | Callable[[], object]
)
_CloseHandler = (
    Callable[["ServerWebSocket[T]", int, str], object]
    | Callable[["ServerWebSocket[T]", int], object]
    | Callable[["ServerWebSocket[T]"], object]
    | Callable[[], object]
)
_ErrorHandler = (
    Callable[["ServerWebSocket[T]", BaseException], object]
    | Callable[["ServerWebSocket[T]"], object]
    | Callable[[], object]
)
_DataHandler = (
    Callable[["ServerWebSocket[T]", bytes], object]
    | Callable[["ServerWebSocket[T]"], object]
    | Callable[[], object]
)


class WebSocketHandlers(TypedDict, Generic[T], total=False):
    """The handlers of a route as a mapping; every key is optional."""

    open: _OpenHandler[T]
    message: _MessageHandler[T]
    close: _CloseHandler[T]
    error: _ErrorHandler[T]
    drain: _OpenHandler[T]
    ping: _DataHandler[T]
    pong: _DataHandler[T]


class _HasOpen(Protocol):
    @property
    def open(self) -> Callable[..., object]: ...


class _HasMessage(Protocol):
    @property
    def message(self) -> Callable[..., object]: ...


class _HasClose(Protocol):
    @property
    def close(self) -> Callable[..., object]: ...


class _HasError(Protocol):
    @property
    def error(self) -> Callable[..., object]: ...


class _HasDrain(Protocol):
    @property
    def drain(self) -> Callable[..., object]: ...


class _HasPing(Protocol):
    @property
    def ping(self) -> Callable[..., object]: ...


class _HasPong(Protocol):
    @property
    def pong(self) -> Callable[..., object]: ...


#: An object whose methods are the handlers (``app.ws("/game", Game())``).
HandlerObject = _HasOpen | _HasMessage | _HasClose | _HasError | _HasDrain | _HasPing | _HasPong
