"""Route options: one typed settings object with documented defaults.

Every limit has a default that is safe on the open internet, with the reason next to it.
Unknown keys and wrong types are a ``ConfigurationError`` (a ``TypeError``) that names the
key; nothing is coerced silently.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .deflate import DeflateOptions, deflate_options
from .errors import ConfigurationError

__all__ = ["RouteOptions", "route_options"]


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """The options of one ``app.ws(...)`` route (keyword arguments of ``app.ws``)."""

    #: Largest message (after reassembly) a client may send; over it: close 1009.
    #: 16 MiB as uWebSockets' default ceiling: big enough for files, small enough to bound.
    max_payload_length: int = 16 * 1024 * 1024
    #: Seconds without any incoming traffic before the connection is closed with 1001.
    #: 0 disables.  120 s as Bun: longer than any proxy's idle cut-off people tune down to.
    idle_timeout: float = 120.0
    #: Ping an idle client at half the idle timeout, so live-but-quiet clients stay open.
    send_pings: bool = True
    #: Bytes a connection may have queued for a slow client.  1 MiB (Bun: 16 MiB) bounds
    #: what 10,000 slow readers can pin to 10 GiB at most, and far less in practice.
    backpressure_limit: int = 1024 * 1024
    #: Close with 1013 instead of dropping when a send crosses ``backpressure_limit``.
    close_on_backpressure_limit: bool = False
    #: Negotiate permessage-deflate (RFC 7692) when the client offers it: True for the
    #: defaults, or a ``DeflateOptions`` (or a mapping of its fields); see docs/deflate.md.
    per_message_deflate: bool | Mapping[str, Any] | DeflateOptions = False
    #: Largest size a compressed message may inflate to; over it: close 1009.  None: the
    #: same as ``max_payload_length``, so compression never changes what a client may send;
    #: lower it where compressed messages are small (it also bounds their CPU: ~1 ms/MiB).
    max_inflated_length: int | None = None
    #: Past 1 MiB inflated, a compressed message may inflate to at most this many times
    #: the compressed bytes it took; over it: close 1009 ("compression ratio").  None: no
    #: cap.  100: JSON, logs and market data deflate 5-35:1, a bomb ~1000:1 (the ratio
    #: Apache POI and Tika use against zip bombs).
    max_compression_ratio: int | None = 100
    #: Whether ``ws.publish`` also delivers to the publishing connection.
    publish_to_self: bool = False
    #: Subprotocols this route speaks, in order of preference; None: none negotiated.
    subprotocols: tuple[str, ...] | None = None
    #: Allowed ``Origin`` values (e.g. ``"https://example.com"``); None: any (403 otherwise).
    origins: frozenset[str] | None = None
    #: ``upgrade(request)`` hook: returns the connection's data or raises ``Reject``.
    upgrade: Callable[..., Any] | None = None
    #: A class or factory called with no arguments to make each connection's ``data``.
    data: Callable[[], Any] | None = None
    #: Bytes read ahead while an async ``message`` handler runs before reading pauses.
    #: 64 KiB: enough to keep a fast client streaming, small enough to bound a flood.
    max_inbound_backlog: int = 64 * 1024
    #: Topics one connection may subscribe to; past it ``subscribe`` returns False (counted
    #: in ``app.stats()["subscriptions_refused"]``).  1024: more rooms than a person
    #: follows, and a client naming topics cannot grow the registry without bound.
    max_subscriptions: int = 1024
    #: Frames a second a client may send on average (messages, pings and pongs all count);
    #: over it the connection is closed with 1008.  None: no limit (see harpia/limits.py).
    max_messages_per_second: float | None = None
    #: Frames a client may send at once before the rate applies; None: one second's worth.
    max_messages_burst: int | None = None
    #: ``per_message_deflate`` as validated settings; None when off (derived, not an option).
    deflate: DeflateOptions | None = dataclasses.field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "deflate", deflate_options(self.per_message_deflate))


_TYPES: dict[str, tuple[type, ...]] = {
    "max_payload_length": (int,),
    "idle_timeout": (int, float),
    "send_pings": (bool,),
    "backpressure_limit": (int,),
    "close_on_backpressure_limit": (bool,),
    "per_message_deflate": (bool, Mapping, DeflateOptions),
    "publish_to_self": (bool,),
    "max_inbound_backlog": (int,),
    "max_subscriptions": (int,),
    "max_messages_per_second": (int, float),
    "max_messages_burst": (int,),
    "max_inflated_length": (int,),
    "max_compression_ratio": (int,),
}

# Options that take None ("no limit of its own"); a number there must be positive.
_OPTIONAL = ("max_messages_per_second", "max_messages_burst", "max_inflated_length",
             "max_compression_ratio")


def route_options(options: Mapping[str, Any]) -> RouteOptions:
    """Validate keyword arguments of ``app.ws`` into a ``RouteOptions``."""
    known = {f.name for f in dataclasses.fields(RouteOptions) if f.init}
    for key, value in options.items():
        if key not in known:
            raise ConfigurationError(
                f"unknown route option {key!r} (known: {', '.join(sorted(known))})"
            )
        types = _TYPES.get(key)
        if value is None and key in _OPTIONAL:
            continue
        if types is not None:
            # bool is an int: refuse True where a number is meant, and 1 where a flag is.
            is_bool = isinstance(value, bool)
            if not isinstance(value, types) or (is_bool and bool not in types):
                names = " or ".join(t.__name__ for t in types)
                raise ConfigurationError(
                    f"route option {key!r} must be {names}, not {type(value).__name__}"
                )
            if not is_bool and isinstance(value, (int, float)) and value < 0:
                raise ConfigurationError(f"route option {key!r} must not be negative")
            if key in _OPTIONAL and value == 0:
                raise ConfigurationError(f"route option {key!r} must be positive (or None)")
    values = dict(options)
    if values.get("subprotocols") is not None:
        values["subprotocols"] = _strings("subprotocols", values["subprotocols"])
    if values.get("origins") is not None:
        values["origins"] = frozenset(o.lower().rstrip("/") for o in _strings("origins", values["origins"]))
    for key in ("upgrade", "data"):
        if values.get(key) is not None and not callable(values[key]):
            raise ConfigurationError(f"route option {key!r} must be callable")
    return RouteOptions(**values)


def _strings(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"route option {key!r} must be a list of strings")
    items = tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"route option {key!r} must be a list of non-empty strings")
    return items
