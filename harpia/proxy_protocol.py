"""The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy specifies it.

A load balancer that ends TCP itself (HAProxy, AWS NLB, ...) opens its own connection to
the server, so the server's peer is the balancer.  With ``proxy_protocol=True`` on a
listener, every connection must start with a PROXY header saying who the client is;
the header is parsed here, sans-I/O: bytes in, the client's address out.

Bounds: a v1 header is at most 107 bytes (the specification's own limit); a v2 header at
most ``MAX_V2_LENGTH`` bytes, which leaves room for the TLVs balancers add (AWS puts a VPC
endpoint id there) but not for a client to make us buffer 64 KiB of nothing.  Anything
that is not a valid header is a ``ProxyProtocolError``: the listener drops the
connection without answering, as the specification asks.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .errors import ProxyProtocolError

__all__ = ["ProxyHeader", "ProxyHeaderParser", "V2_SIGNATURE", "MAX_V1_LENGTH", "MAX_V2_LENGTH"]

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: "PROXY TCP6 " + two IPv6 addresses + two ports + CRLF, from the specification.
MAX_V1_LENGTH = 107
#: 16 bytes of fixed header, 216 for two Unix paths, the rest for TLVs.
MAX_V2_LENGTH = 16 + 216 + 768

_V2_COMMANDS = {0x20: "LOCAL", 0x21: "PROXY"}
# family/transport byte -> (address family, bytes of addresses and ports)
_V2_FAMILIES = {0x11: (socket.AF_INET, 12), 0x12: (socket.AF_INET, 12),
                0x21: (socket.AF_INET6, 36), 0x22: (socket.AF_INET6, 36)}


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a PROXY header said.  ``source`` is the client's ``(host, port)``; None for a
    LOCAL connection (the balancer's own health check) or an UNKNOWN/unix family: then
    the TCP peer is the address to use."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


class ProxyHeaderParser:
    """Feed bytes until ``feed`` returns the header; ``trailing`` is what came after it."""

    __slots__ = ("_buffer", "trailing")

    def __init__(self) -> None:
        self._buffer = b""
        self.trailing = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        buffer = self._buffer = self._buffer + bytes(data)
        # Decide the version from the first byte, and fail as soon as a byte is wrong.
        if buffer[:1] == b"\r":
            if not V2_SIGNATURE.startswith(buffer[:12]):
                raise ProxyProtocolError("bad PROXY v2 signature")
            return None if len(buffer) < 16 else self._v2(buffer)
        if buffer[:1] == b"P":
            if not V1_PREFIX.startswith(buffer[:6]):
                raise ProxyProtocolError("the connection does not start with a PROXY protocol header")
            return None if len(buffer) < 6 else self._v1(buffer)
        if not buffer:
            return None
        raise ProxyProtocolError("the connection does not start with a PROXY protocol header")

    def _v1(self, buffer: bytes) -> ProxyHeader | None:
        end = buffer.find(b"\r\n", 0, MAX_V1_LENGTH)
        if end < 0:
            if len(buffer) >= MAX_V1_LENGTH:
                raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
            return None
        self.trailing = buffer[end + 2:]
        self._buffer = b""
        try:
            fields = buffer[:end].decode("ascii").split(" ")
        except UnicodeDecodeError:
            raise ProxyProtocolError("PROXY v1 header is not ASCII") from None
        if len(fields) >= 2 and fields[1] == "UNKNOWN":
            return ProxyHeader(1, None, None)
        if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
            raise ProxyProtocolError("PROXY v1 header: expected 'PROXY TCP4|TCP6 src dst sport dport'")
        family = socket.AF_INET if fields[1] == "TCP4" else socket.AF_INET6
        source = (_address(family, fields[2]), _port(fields[4]))
        destination = (_address(family, fields[3]), _port(fields[5]))
        return ProxyHeader(1, source, destination)

    def _v2(self, buffer: bytes) -> ProxyHeader | None:
        command, family, length = struct.unpack_from("!BBH", buffer, 12)
        if command not in _V2_COMMANDS:
            raise ProxyProtocolError(f"PROXY v2: unknown version/command byte {command:#04x}")
        if 16 + length > MAX_V2_LENGTH:
            raise ProxyProtocolError(f"PROXY v2 header of {16 + length} bytes (at most {MAX_V2_LENGTH})")
        if len(buffer) < 16 + length:
            return None
        self.trailing = buffer[16 + length:]
        self._buffer = b""
        body = buffer[16:16 + length]
        if _V2_COMMANDS[command] == "LOCAL" or family not in _V2_FAMILIES:
            return ProxyHeader(2, None, None)     # health check, UNSPEC or unix: keep the peer
        address_family, size = _V2_FAMILIES[family]
        if length < size:
            raise ProxyProtocolError(f"PROXY v2: {length} bytes of addresses, expected {size}")
        half = (size - 4) // 2
        src = socket.inet_ntop(address_family, body[:half])
        dst = socket.inet_ntop(address_family, body[half:2 * half])
        sport, dport = struct.unpack_from("!HH", body, 2 * half)
        return ProxyHeader(2, (src, sport), (dst, dport))


def _address(family: int, text: str) -> str:
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except OSError:
        raise ProxyProtocolError(f"PROXY v1 header: invalid address {text!r}") from None


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535 or (text[0] == "0" and text != "0"):
        raise ProxyProtocolError(f"PROXY v1 header: invalid port {text!r}")
    return int(text)
