"""The usual upgrade request in C (compiled with Cython): see harpia/_upgrade.pyx."""
from .http_head import Headers, RequestHead

def parse_request_head(data: bytes, max_request_line: int, max_header_line: int,
                       max_headers: int, max_head_size: int
                       ) -> tuple[RequestHead, int, str | None] | None:
    """``(head, end, key)`` for a usual request head that arrived whole at the start of
    ``data``; ``None`` for anything else (the general parser decides it).  ``key`` is the
    ``Sec-WebSocket-Key`` of a valid opening handshake whose fields each occur once."""

def accept_key_bytes(key: str) -> bytes:
    """``Sec-WebSocket-Accept`` for ``key``: base64(SHA-1(key + GUID)), as bytes."""

def response_101(key: str) -> bytes:
    """The usual 101 for a valid ``key``: no subprotocol, no extension, no extra header."""

def pack_header_fields(headers: Headers) -> str:
    """The fields of ``headers`` as one string, names and values separated by LF: what an
    open connection keeps of its request (``connection.unpack_header_fields`` reverses it)."""
