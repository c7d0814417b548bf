"""Binding handlers at registration: arity, async detection, errors that name the key."""
from __future__ import annotations

import functools
from typing import Any

import pytest

from harpia.errors import ConfigurationError
from harpia.handlers import HANDLER_ARGS, BoundHandler, bind_handlers


def bound(handlers: object, key: str) -> BoundHandler:
    handler = getattr(bind_handlers(handlers), key)
    assert isinstance(handler, BoundHandler)
    return handler


# --------------------------------------------------------------------------- arity

@pytest.mark.parametrize("fn, arity", [
    (lambda ws, code, reason: None, 3),
    (lambda ws, code: None, 2),
    (lambda ws: None, 1),                          # Bun's close(ws)
    (lambda: None, 0),
    (lambda ws, code=0, reason="", extra=None: None, 3),   # defaults: capped at 3
    (lambda *args: None, 3),
    (lambda ws, *rest: None, 3),
    (lambda ws, *, flag=False: None, 1),           # optional keyword-only is fine
    (lambda ws, /, code: None, 2),
])
def test_arity_is_read_once_from_the_signature(fn: Any, arity: int) -> None:
    assert bound({"close": fn}, "close").arity == arity


def test_arity_of_methods_partials_and_callables() -> None:
    class Handlers:
        def message(self, ws: Any) -> None: ...          # self is not counted

        @staticmethod
        def close(ws: Any, code: int) -> None: ...

    class Callable:
        def __call__(self, ws: Any, message: Any) -> None: ...

    def three(prefix: str, ws: Any, message: Any) -> None: ...

    handlers = bind_handlers(Handlers())
    assert handlers.message is not None and handlers.message.arity == 1
    assert handlers.close is not None and handlers.close.arity == 2
    assert bound({"message": Callable()}, "message").arity == 2
    assert bound({"message": functools.partial(three, "p")}, "message").arity == 2
    assert bound({"message": print}, "message").arity == 2       # print(*args)
    # A builtin without a signature cannot be inspected: it is passed everything.
    assert bound({"message": max}, "message").arity == 2


def test_a_bound_handler_passes_only_what_it_takes() -> None:
    calls: list[tuple[Any, ...]] = []
    handler = bound({"close": lambda ws: calls.append((ws,))}, "close")
    handler("ws", 1000, "bye")
    handler = bound({"close": lambda ws, code, reason: calls.append((ws, code, reason))},
                    "close")
    handler("ws", 1001, "away")
    assert calls == [("ws",), ("ws", 1001, "away")]


@pytest.mark.parametrize("fn, words", [
    (lambda ws, code, reason, extra: None, "requires 4 arguments"),
    (lambda ws, *, required: None, "keyword-only argument 'required'"),
])
def test_handlers_that_cannot_be_called_are_refused(fn: Any, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as info:
        bind_handlers({"close": fn})
    assert "'close'" in str(info.value)


# --------------------------------------------------------------------------- async

def test_async_detection() -> None:
    async def coroutine_fn(ws: Any) -> None: ...

    class Methods:
        async def open(self, ws: Any) -> None: ...

        def close(self, ws: Any) -> None: ...

    class AsyncCallable:
        async def __call__(self, ws: Any) -> None: ...

    assert bound({"open": coroutine_fn}, "open").is_async
    assert bound(Methods(), "open").is_async
    assert not bound(Methods(), "close").is_async
    assert bound({"open": AsyncCallable()}, "open").is_async
    assert not bound({"open": lambda ws: None}, "open").is_async


# --------------------------------------------------------------------------- forms and errors

def test_mapping_and_object_forms_bind_the_same_keys() -> None:
    def fn(ws: Any) -> None: ...

    class Handlers:
        open = staticmethod(fn)
        drain = staticmethod(fn)
        unrelated = "ignored: not a handler name"

    for handlers in ({"open": fn, "drain": fn}, Handlers()):
        bound_handlers = bind_handlers(handlers)
        assert bound_handlers.open is not None and bound_handlers.drain is not None
        for name in set(HANDLER_ARGS) - {"open", "drain"}:
            assert getattr(bound_handlers, name) is None


def test_missing_and_none_handlers_are_none() -> None:
    handlers = bind_handlers({"message": None})
    assert all(getattr(handlers, name) is None for name in HANDLER_ARGS)


def test_an_object_with_no_handler_method_is_refused() -> None:
    # It would be accepted with no handler at all, and every message silently dropped.
    with pytest.raises(ConfigurationError, match=r"handler object object has none of the "
                       r"handler methods \(open, message, close, error, drain, ping, pong\)"):
        bind_handlers(object())


@pytest.mark.parametrize("near_miss", ["on_message", "onMessage", "handle_close", "on_open",
                                       "Drain", "on_pong"])
def test_near_miss_method_names_are_refused_naming_the_real_ones(near_miss: str) -> None:
    def fn(ws: Any, *rest: Any) -> None: ...

    # Even next to a correctly named handler: the misnamed one would never be called.
    handlers = type("Chat", (), {near_miss: fn, "error": fn})()
    with pytest.raises(ConfigurationError) as info:
        bind_handlers(handlers)
    assert str(info.value) == (
        f"handler object Chat has {near_miss}, which harpia never calls: the handler methods "
        f"are named open, message, close, error, drain, ping, pong")


def test_other_methods_are_not_near_misses() -> None:
    class Game:
        def open(self, ws: Any) -> None: ...
        def closed(self) -> bool: return False
        def messages_sent(self) -> int: return 0
        def ping_interval(self) -> float: return 1.0

    assert bind_handlers(Game()).open is not None


@pytest.mark.parametrize("key", ["onmessage", "Message", "messages", "upgrade"])
def test_unknown_keys_are_a_type_error_naming_the_key(key: str) -> None:
    with pytest.raises(TypeError) as info:
        bind_handlers({key: lambda ws: None})
    assert isinstance(info.value, ConfigurationError)
    assert repr(key) in str(info.value)


@pytest.mark.parametrize("value", ["not callable", 42, ["list"]])
def test_non_callables_are_a_type_error_naming_the_key(value: object) -> None:
    with pytest.raises(TypeError, match="'drain'"):
        bind_handlers({"drain": value})

    class Handlers:
        drain = value

    with pytest.raises(TypeError, match="'drain'"):
        bind_handlers(Handlers())
