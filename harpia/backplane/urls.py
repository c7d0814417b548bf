"""``redis+cluster://`` and ``redis+sentinel://`` URLs: several ``host:port`` in one URL."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from ..errors import ConfigurationError

__all__ = ["MultiHostURL", "parse_multi_host"]


@dataclass(frozen=True)
class MultiHostURL:
    """``scheme://[user[:password]@]host:port[,host:port...][/path]``, taken apart."""

    scheme: str
    hosts: list[tuple[str, int]]
    path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_multi_host(url: str, schemes: tuple[str, ...], default_port: int, example: str) -> MultiHostURL:
    """Split ``url``; ConfigurationError naming ``example`` if it is not one of ``schemes``
    with at least one ``host[:port]``.  (``urllib.parse`` reads one host per URL only.)"""
    scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    if not sep or scheme.lower() not in schemes:
        raise ConfigurationError(f"pubsub URL must look like {example!r}, got {url!r}")
    netloc, _, path = rest.partition("/")
    netloc = netloc.partition("?")[0]
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [IPv6]:port
            host, _, tail = part[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigurationError(f"bad port {port_text!r} in pubsub URL {url!r}") from None
        if not host or not 0 < port < 65536:
            raise ConfigurationError(f"bad host:port {part!r} in pubsub URL {url!r}")
        hosts.append((host, port))
    if not hosts:
        raise ConfigurationError(f"pubsub URL {url!r} names no host; expected {example!r}")
    return MultiHostURL(scheme.lower(), hosts, unquote(path.partition("?")[0]), username, password)
