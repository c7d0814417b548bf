"""Fuzz the upgrade-request parser and the RFC 6455 handshake checks.

The contract under test: any input, split anywhere, either yields a request head (then the
WebSocket checks accept it or raise ``HandshakeError``), asks for more bytes, or raises
``HandshakeError`` with a 4xx/5xx status — never another exception, and never more buffered
than the limits.  And the C reading of a head that arrives whole (``harpia._upgrade``), when
it takes one, is the general parser's reading of the same bytes, with the key the full
checks return.

    python fuzzing/fuzz_handshake.py -max_total_time=60
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from harpia._upgrade import parse_request_head
    from harpia.errors import HandshakeError
    from harpia.handshake import check_websocket_request, parse_extension_offers
    from harpia.http_parser import HttpRequestParser
    from harpia.http_response import error_response

LIMITS = {"max_request_line": 256, "max_header_line": 256, "max_headers": 16, "max_head_size": 2048}


def check_fast_path(data: bytes) -> None:
    found = parse_request_head(data, *LIMITS.values())
    if found is None:
        return
    head, end, key = found
    parser = HttpRequestParser(**LIMITS)
    for i in range(len(data)):
        general = parser.feed(data[i:i + 1])
        if general is not None:
            break
    else:
        raise AssertionError("the C path read a head the general parser does not finish")
    assert general == head and general.headers.raw_items() == head.headers.raw_items()
    assert i + 1 == end
    if key is not None:
        assert check_websocket_request(head) == key


def check(data: bytes) -> None:
    check_fast_path(data)
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
