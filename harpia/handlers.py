"""Binding the user's handlers once, at registration.

A route's handlers are a mapping (``{"open": fn, ...}``) or any object with methods of
those names.  Here each one is checked and its arity read once (a handler may take fewer
trailing arguments, as Bun's ``close(ws)``), so nothing is inspected per call.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["HANDLER_ARGS", "BoundHandler", "RouteHandlers", "bind_handlers"]

#: Each handler's full argument list; a handler may accept a prefix of it.
HANDLER_ARGS: dict[str, tuple[str, ...]] = {
    "open": ("ws",),
    "message": ("ws", "message"),
    "close": ("ws", "code", "reason"),
    "error": ("ws", "error"),
    "drain": ("ws",),
    "ping": ("ws", "data"),
    "pong": ("ws", "data"),
}


class BoundHandler:
    """One handler with what is needed to call it: how many arguments, sync or async."""

    __slots__ = ("fn", "arity", "is_async")

    def __init__(self, fn: Callable[..., Any], arity: int, is_async: bool) -> None:
        self.fn = fn
        self.arity = arity
        self.is_async = is_async

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args[: self.arity])


class RouteHandlers:
    """The handlers of one route; ``None`` for each one the user left out."""

    __slots__ = tuple(HANDLER_ARGS)

    open: BoundHandler | None
    message: BoundHandler | None
    close: BoundHandler | None
    error: BoundHandler | None
    drain: BoundHandler | None
    ping: BoundHandler | None
    pong: BoundHandler | None

    def __init__(self, bound: Mapping[str, BoundHandler]) -> None:
        for name in HANDLER_ARGS:
            setattr(self, name, bound.get(name))


def _arity(name: str, fn: Callable[..., Any]) -> int:
    most = len(HANDLER_ARGS[name])
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):      # some builtins have no signature: pass everything
        return most
    required = 0
    accepted = 0
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            return most
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            accepted += 1
            if param.default is param.empty:
                required += 1
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            raise ConfigurationError(
                f"handler {name!r} has a required keyword-only argument {param.name!r}"
            )
    if required > most:
        args = ", ".join(HANDLER_ARGS[name])
        raise ConfigurationError(
            f"handler {name!r} requires {required} arguments but is called with at most "
            f"{most} ({args})"
        )
    return min(accepted, most)


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def _refuse_near_misses(handlers: object, found: Mapping[str, Any]) -> None:
    # An object whose methods are spelt `on_message` or `onMessage` would be accepted with
    # no handler at all and every message silently dropped: refuse it, naming the real ones.
    known = ", ".join(HANDLER_ARGS)
    kind = type(handlers).__name__
    near = sorted(
        attr for attr in dir(handlers)
        if attr not in HANDLER_ARGS and not attr.startswith("__")
        and attr.lower().replace("_", "").removeprefix("handle").removeprefix("on") in HANDLER_ARGS
    )
    if near:
        raise ConfigurationError(
            f"handler object {kind} has {', '.join(near)}, which harpia never calls: "
            f"the handler methods are named {known}")
    if not found:
        raise ConfigurationError(
            f"handler object {kind} has none of the handler methods ({known}); pass a "
            f"mapping such as {{\"message\": fn}} or an object with some of those methods")


def bind_handlers(handlers: object) -> RouteHandlers:
    """Check ``handlers`` (a mapping or an object with methods) and bind each one."""
    found: dict[str, Any] = {}
    if isinstance(handlers, Mapping):
        for key, fn in handlers.items():
            if key not in HANDLER_ARGS:
                raise ConfigurationError(
                    f"unknown handler {key!r} (known: {', '.join(HANDLER_ARGS)})"
                )
            found[key] = fn
    else:
        for key in HANDLER_ARGS:
            fn = getattr(handlers, key, None)
            if fn is not None:
                found[key] = fn
        _refuse_near_misses(handlers, found)
    bound: dict[str, BoundHandler] = {}
    for key, fn in found.items():
        if fn is None:
            continue
        if not callable(fn):
            raise ConfigurationError(f"handler {key!r} must be callable, not {type(fn).__name__}")
        bound[key] = BoundHandler(fn, _arity(key, fn), _is_async(fn))
    return RouteHandlers(bound)
