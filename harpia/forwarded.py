"""``X-Forwarded-For`` and ``Forwarded`` (RFC 7239), honoured only from trusted proxies.

Anyone can send these headers, so by default harpia ignores them.  A listener with
``forwarded_allow_ips=[...]`` (addresses or networks, ``"*"`` for any, as uvicorn's
option) believes them when the TCP peer is one of those: the client is the right-most
address in the chain that is not itself a trusted proxy (each proxy appends the address it
saw, so the addresses left of the first untrusted hop are the client's own claims).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .errors import ConfigurationError
from .http_head import Headers

__all__ = ["TrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The addresses whose forwarding headers are believed."""

    __slots__ = ("any", "networks")

    def __init__(self, allow: Iterable[str]) -> None:
        if isinstance(allow, str):
            allow = [part.strip() for part in allow.split(",") if part.strip()]
        self.any = False
        self.networks: list[_Network] = []
        for entry in allow:
            if not isinstance(entry, str):
                raise ConfigurationError(f"forwarded_allow_ips: {entry!r} is not a string")
            if entry == "*":
                self.any = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ConfigurationError(f"forwarded_allow_ips: {exc}") from None

    def trusts(self, host: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_address(self, peer: tuple[str, int] | None,
                       headers: Headers) -> tuple[str, int] | None:
        """The client's address: from the headers when ``peer`` is trusted, else ``peer``.

        A Unix-socket peer (None) is a local proxy: trusted when the list is ``"*"``."""
        if peer is None:
            if not self.any:
                return None
        elif not self.trusts(peer[0]):
            return peer
        chain = _forwarded_for(headers)
        for hop in reversed(chain):
            if not self.trusts(hop[0]):
                return hop
        return chain[0] if chain else peer


def _forwarded_for(headers: Headers) -> list[tuple[str, int]]:
    """The ``for=`` chain of ``Forwarded``, else of ``X-Forwarded-For``, left to right."""
    chain: list[tuple[str, int]] = []
    for line in headers.get_all("forwarded"):
        for element in line.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    hop = _node(value.strip().strip('"'))
                    if hop is not None:
                        chain.append(hop)
    if chain:
        return chain
    for line in headers.get_all("x-forwarded-for"):
        for part in line.split(","):
            hop = _node(part.strip())
            if hop is not None:
                chain.append(hop)
    return chain


def _node(text: str) -> tuple[str, int] | None:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]``, ``[::1]:80``, ``::1``; None for ``unknown``
    or an obfuscated name (RFC 7239 section 6)."""
    port = 0
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, tail = text.partition(":")
        if tail.isdigit():
            port = int(tail)
    else:
        host = text
    try:
        return (str(ipaddress.ip_address(host)), port if port <= 65535 else 0)
    except ValueError:
        return None
