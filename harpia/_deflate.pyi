"""permessage-deflate (RFC 7692) for the frame engine: zlib's C API, raw deflate (compiled with Cython).

The engine uses these through C calls; from Python they are visible for tests and tools.
"""
from _typeshed import ReadableBuffer
from typing_extensions import disjoint_base

def zlib_version() -> str:
    """The version of the zlib harpia runs with."""

def inflater_pool_size() -> int:
    """How many free inflaters the process keeps for peers that reset their context."""

@disjoint_base
class Deflater:
    """A raw-deflate compressor; ``no_context_takeover``: reset before every message."""

    @property
    def window_bits(self) -> int:
        """LZ77 window: ``2**window_bits`` bytes (9-15)."""
    @property
    def level(self) -> int:
        """zlib compression level (0-9)."""
    @property
    def memory_level(self) -> int:
        """zlib memLevel (1-9)."""
    @property
    def no_context_takeover(self) -> bool:
        """True if every message starts from a fresh state."""
    def __init__(
        self,
        window_bits: int = 15,
        level: int = 6,
        memory_level: int = 8,
        no_context_takeover: bool = True,
    ) -> None:
        """ValueError for a value out of range."""
    def compress_message(self, data: ReadableBuffer) -> bytes:
        """``data`` compressed as one message's payload (sync flush, tail removed)."""

@disjoint_base
class Inflater:
    """A raw-deflate decompressor with a window of ``2**window_bits`` bytes."""

    @property
    def window_bits(self) -> int:
        """LZ77 window: ``2**window_bits`` bytes (8-15)."""
    def __init__(self, window_bits: int = 15) -> None:
        """ValueError for a value out of range."""

@disjoint_base
class PerMessageDeflate:
    """permessage-deflate as negotiated for one connection (``local``: what this side sends)."""

    @property
    def client(self) -> bool:
        """True in the client role."""
    @property
    def local_no_context_takeover(self) -> bool:
        """This side compresses every message from a fresh state."""
    @property
    def remote_no_context_takeover(self) -> bool:
        """The peer compresses every message from a fresh state."""
    @property
    def local_max_window_bits(self) -> int:
        """Window of what this side sends (8 means: sent uncompressed)."""
    @property
    def remote_max_window_bits(self) -> int:
        """Window of what the peer sends."""
    @property
    def compression_level(self) -> int:
        """zlib level of what this side sends."""
    @property
    def memory_level(self) -> int:
        """zlib memLevel of this side's compressor."""
    @property
    def compress_threshold(self) -> int:
        """Messages shorter than this go uncompressed unless a send forces compression."""
    @property
    def can_compress(self) -> bool:
        """False when the peer asked for a 256-byte window, which zlib cannot produce."""
    wire_in: int
    """Compressed bytes of the message being received."""
    @property
    def max_inflated_length(self) -> int:
        """Largest inflated message, when lower than the engine's limit (-1: none)."""
    @property
    def max_compression_ratio(self) -> int:
        """Past 1 MiB inflated: at most this many times the compressed bytes (0: no cap)."""
    @property
    def has_inflater(self) -> bool:
        """True while this connection holds a decompressor."""
    @property
    def has_own_deflater(self) -> bool:
        """True if this connection has a compressor of its own (it keeps its context)."""
    def __init__(
        self,
        *,
        client: bool = False,
        local_no_context_takeover: bool = True,
        remote_no_context_takeover: bool = True,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        compression_level: int = 6,
        memory_level: int = 8,
        compress_threshold: int = 0,
        max_inflated_length: int = -1,
        max_compression_ratio: int = 0,
    ) -> None:
        """ValueError for a value out of range."""
