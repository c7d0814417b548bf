"""permessage-deflate (RFC 7692): the settings of a route and the negotiation, sans-I/O.

``DeflateOptions`` is the route option ``per_message_deflate`` as one typed object;
``negotiate(offers, options)`` picks the first acceptable offer of a client's
``Sec-WebSocket-Extensions`` header (as parsed by ``handshake.parse_extension_offers``)
and returns the ``DeflateAgreement``: the parameters both sides use and the response
header value.  Compression itself is in the compiled engine (``harpia._deflate``).

Why the defaults keep a deflate connection small: with ``server_no_context_takeover``
the server compresses every message from a fresh state, so it needs no compressor per
connection (one per process, shared) and a publish compresses once for all subscribers;
with ``client_no_context_takeover`` the client does the same, so the server needs an
inflater only while a message is arriving (borrowed from a pool).  An idle connection
then holds no zlib state at all.  See docs/deflate.md for the figures.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = ["DeflateOptions", "DeflateAgreement", "deflate_options", "negotiate",
           "EXTENSION_NAME"]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 section 7.1.2: a decimal integer 8-15 without leading zeroes.
_WINDOW_BITS = re.compile(r"[89]|1[0-5]")


@dataclass(frozen=True, slots=True)
class DeflateOptions:
    """Settings of permessage-deflate for a route (``per_message_deflate=DeflateOptions(...)``,
    or a mapping with these keys, or ``True`` for the defaults)."""

    #: Compress every message from a fresh state.  True: one shared compressor per process
    #: instead of ~256 KiB per connection, and a publish compresses once per group of
    #: subscribers.  False compresses repetitive streams better, at that memory cost.
    server_no_context_takeover: bool = True
    #: Ask clients to compress every message from a fresh state, so no inflater is kept per
    #: connection between messages.  False: one of ~7 KiB + 2**client_max_window_bits each.
    client_no_context_takeover: bool = True
    #: LZ77 window of what the server sends, 9-15 (2**bits bytes).  A client may ask for
    #: less; 8 is then accepted but messages go uncompressed (zlib cannot make 8).
    server_max_window_bits: int = 15
    #: Window asked of clients that offer ``client_max_window_bits``, 8-15: it sizes the
    #: inflater a connection keeps when the client keeps its context.
    client_max_window_bits: int = 15
    #: zlib level 0-9.  1 (zlib's fastest, as aiohttp and nginx): on 16 KiB of JSON it
    #: keeps 6.1% of the bytes where level 6 (zlib's default) keeps 5.1%, at a third of the CPU.
    compression_level: int = 1
    #: zlib memLevel 1-9 (the compressor's hash table: 2**(memory_level + 9) bytes).
    memory_level: int = 8
    #: Messages shorter than this many bytes are sent uncompressed unless a send passes
    #: ``compress=True``: below ~128 bytes deflate rarely saves anything and costs CPU.
    compress_threshold: int = 128

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "bool":
                if not isinstance(value, bool):
                    raise ConfigurationError(
                        f"per_message_deflate option {field.name!r} must be bool, not "
                        f"{type(value).__name__}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(
                    f"per_message_deflate option {field.name!r} must be int, not "
                    f"{type(value).__name__}")
        for name, low, high in (("server_max_window_bits", 9, 15),
                                ("client_max_window_bits", 8, 15),
                                ("compression_level", 0, 9),
                                ("memory_level", 1, 9)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigurationError(
                    f"per_message_deflate option {name!r} must be {low}-{high}, not {value}")
        if self.compress_threshold < 0:
            raise ConfigurationError(
                "per_message_deflate option 'compress_threshold' must not be negative")


def deflate_options(value: object) -> DeflateOptions | None:
    """The route option ``per_message_deflate`` as settings: ``False`` -> None (off),
    ``True`` -> the defaults, a mapping -> those keys over the defaults."""
    if isinstance(value, DeflateOptions):
        return value
    if isinstance(value, bool):
        return DeflateOptions() if value else None
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(DeflateOptions)}
        for key in value:
            if key not in known:
                raise ConfigurationError(
                    f"unknown per_message_deflate option {key!r} (known: "
                    f"{', '.join(sorted(known))})")
        return DeflateOptions(**value)
    raise ConfigurationError(
        "route option 'per_message_deflate' must be bool, a mapping or DeflateOptions, not "
        f"{type(value).__name__}")


@dataclass(frozen=True, slots=True)
class DeflateAgreement:
    """What the server accepted: the parameters in force for one connection."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int
    #: The ``Sec-WebSocket-Extensions`` value of the 101 response.
    response: str

    def engine_settings(self, options: DeflateOptions) -> dict[str, Any]:
        """Keyword arguments of ``FrameEngine.enable_deflate`` for the server role."""
        return {
            "local_no_context_takeover": self.server_no_context_takeover,
            "remote_no_context_takeover": self.client_no_context_takeover,
            "local_max_window_bits": self.server_max_window_bits,
            "remote_max_window_bits": self.client_max_window_bits,
            "compression_level": options.compression_level,
            "memory_level": options.memory_level,
            "compress_threshold": options.compress_threshold,
        }


Offer = tuple[str, Sequence[tuple[str, str | None]]]


def negotiate(offers: Sequence[Offer], options: DeflateOptions) -> DeflateAgreement | None:
    """Accept the first acceptable permessage-deflate offer (RFC 7692 section 7), or None.

    An offer is declined (and the next one tried) when it has an unknown parameter, a
    parameter twice, or a value that is not allowed; other extensions are ignored.
    """
    for name, params in offers:
        if name.lower() != EXTENSION_NAME:
            continue
        agreement = _accept(params, options)
        if agreement is not None:
            return agreement
    return None


def _accept(params: Sequence[tuple[str, str | None]],
            options: DeflateOptions) -> DeflateAgreement | None:
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    client_bits: int | bool | None = None       # True: offered without a value
    for raw_name, value in params:
        name = raw_name.lower()
        if name in seen:
            return None
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
            if name == "server_no_context_takeover":
                server_nct = True
            else:
                client_nct = True
        elif name == "server_max_window_bits":
            if value is None or not _WINDOW_BITS.fullmatch(value):
                return None
            server_bits = int(value)
        elif name == "client_max_window_bits":
            if value is None:
                client_bits = True
            elif _WINDOW_BITS.fullmatch(value):
                client_bits = int(value)
            else:
                return None
        else:
            return None

    # Server to client: the client may lower our window and may forbid our context.
    server_no_context_takeover = server_nct or options.server_no_context_takeover
    server_max_window_bits = options.server_max_window_bits
    if server_bits is not None:
        server_max_window_bits = min(server_max_window_bits, server_bits)
    # Client to server: we may ask for a reset and, only if the client offered it, a window.
    client_no_context_takeover = client_nct or options.client_no_context_takeover
    if client_bits is None:
        client_max_window_bits = 15
    elif client_bits is True:
        client_max_window_bits = options.client_max_window_bits
    else:
        client_max_window_bits = min(options.client_max_window_bits, client_bits)

    response = [EXTENSION_NAME]
    if server_no_context_takeover:
        response.append("server_no_context_takeover")
    if client_no_context_takeover:
        response.append("client_no_context_takeover")
    if server_bits is not None or server_max_window_bits < 15:
        response.append(f"server_max_window_bits={server_max_window_bits}")
    if client_bits is not None and (client_bits is not True or client_max_window_bits < 15):
        response.append(f"client_max_window_bits={client_max_window_bits}")
    return DeflateAgreement(
        server_no_context_takeover=server_no_context_takeover,
        client_no_context_takeover=client_no_context_takeover,
        server_max_window_bits=server_max_window_bits,
        client_max_window_bits=client_max_window_bits,
        response="; ".join(response),
    )
