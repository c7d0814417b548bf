"""A connection's output side: the frames queued this loop turn and the backpressure
accounting (compiled with Cython; the frame engine drives it through C calls)."""
from typing import final

from typing_extensions import disjoint_base

@disjoint_base
class ByteSink:
    """Where output can go at C level, without a bytes object per write
    (``harpia._transport.SocketTransport`` is one)."""

@final
class OutputBuffer:
    """Queued frames and the bytes counted against ``limit``."""

    @property
    def limit(self) -> int:
        """The backpressure limit in bytes (the engine's ``backpressure_limit``)."""
