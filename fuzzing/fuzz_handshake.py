"""Fuzz the upgrade-request parser and the RFC 6455 handshake checks.

The contract under test: any input, split anywhere, either yields a request head (then the
WebSocket checks accept it or raise ``HandshakeError``), asks for more bytes, or raises
``HandshakeError`` with a 4xx/5xx status — never another exception, and never more buffered
than the limits.

    python fuzzing/fuzz_handshake.py -max_total_time=60
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from harpia.errors import HandshakeError
    from harpia.handshake import check_websocket_request, parse_extension_offers
    from harpia.http_parser import HttpRequestParser
    from harpia.http_response import error_response

LIMITS = {"max_request_line": 256, "max_header_line": 256, "max_headers": 16, "max_head_size": 2048}


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    parser = HttpRequestParser(**LIMITS)
    head = None
    try:
        while fdp.remaining_bytes() and head is None:
            head = parser.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 128)))
    except HandshakeError as exc:
        assert 400 <= exc.status <= 599, exc.status
        assert error_response(exc).startswith(b"HTTP/1.1 ")
        return
    if head is None:
        return
    try:
        key = check_websocket_request(head)
        assert isinstance(key, str) and len(key) == 24
        parse_extension_offers(head)
    except HandshakeError as exc:
        assert 400 <= exc.status <= 599, exc.status


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
