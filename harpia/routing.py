"""Routes and the router: path patterns with ``:params`` (``/room/:roomId``), compiled
once at registration, and the two kinds of route an app serves."""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigurationError
from .handlers import RouteHandlers
from .options import RouteOptions

__all__ = ["PathPattern", "Router", "WebSocketRoute", "HttpRoute"]

R = TypeVar("R")

_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")


class PathPattern:
    """``/room/:roomId`` matches ``/room/42`` with ``{"roomId": "42"}``; ``*`` at the end
    matches any rest of the path.  A parameter matches one non-empty path segment."""

    __slots__ = ("pattern", "names", "shape", "_regex", "_static")

    def __init__(self, pattern: str) -> None:
        if not pattern.startswith("/"):
            raise ConfigurationError(f"route path must start with '/': {pattern!r}")
        self.pattern = pattern
        self.names: tuple[str, ...] = tuple(_PARAM.findall(pattern))
        if len(set(self.names)) != len(self.names):
            raise ConfigurationError(f"route {pattern!r} repeats a parameter name")
        #: The pattern with its parameter names left out: equal shapes match equal paths.
        self.shape = _PARAM.sub(":", pattern)
        static = not self.names and not pattern.endswith("*")
        self._static = pattern if static else None
        regex = ""
        rest = pattern
        if rest.endswith("*"):
            rest = rest[:-1]
        pos = 0
        for match in _PARAM.finditer(rest):
            regex += re.escape(rest[pos:match.start()]) + f"(?P<{match.group(1)}>[^/]+)"
            pos = match.end()
        regex += re.escape(rest[pos:])
        if pattern.endswith("*"):
            regex += ".*"
        self._regex = re.compile(regex + r"\Z")

    def match(self, path: str) -> dict[str, str] | None:
        if self._static is not None:
            return {} if path == self._static else None
        found = self._regex.match(path)
        return None if found is None else found.groupdict()


class Router(Generic[R]):
    """Routes in registration order; static paths are found with one dict lookup."""

    __slots__ = ("_static", "_patterns")

    def __init__(self) -> None:
        self._static: dict[str, R] = {}
        self._patterns: list[tuple[PathPattern, R]] = []

    def add(self, pattern: str, route: R) -> None:
        compiled = PathPattern(pattern)
        if compiled.pattern in self._static:
            raise ConfigurationError(f"route {pattern!r} is already registered")
        for other, _ in self._patterns:
            if other.shape == compiled.shape:
                same = "" if other.pattern == pattern else f" as {other.pattern!r} (the same paths)"
                raise ConfigurationError(f"route {pattern!r} is already registered{same}")
        if compiled.names or pattern.endswith("*"):
            self._patterns.append((compiled, route))
        else:
            self._static[pattern] = route

    def routes(self) -> list[R]:
        """Every route: the static paths, then the patterns, each in registration order."""
        return list(self._static.values()) + [route for _, route in self._patterns]

    def match(self, path: str) -> tuple[R, dict[str, str]] | None:
        route = self._static.get(path)
        if route is not None:
            return route, {}
        for pattern, candidate in self._patterns:
            params = pattern.match(path)
            if params is not None:
                return candidate, params
        return None


class WebSocketRoute:
    """A WebSocket path with its bound handlers and options."""

    __slots__ = ("pattern", "handlers", "options")
    kind = "ws"

    def __init__(self, pattern: str, handlers: RouteHandlers, options: RouteOptions) -> None:
        self.pattern = pattern
        self.handlers = handlers
        self.options = options


class HttpRoute:
    """A plain HTTP GET path (health checks, a page)."""

    __slots__ = ("pattern", "handler", "arity", "content_type")
    kind = "http"

    def __init__(self, pattern: str, handler: Callable[..., Any], content_type: str | None) -> None:
        self.pattern = pattern
        self.handler = handler
        try:
            self.arity = min(1, len(inspect.signature(handler).parameters))
        except (TypeError, ValueError):
            self.arity = 1
        self.content_type = content_type
