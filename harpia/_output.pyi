"""A connection's output side: the frames queued this loop turn and the backpressure
accounting (compiled with Cython; the frame engine drives it through C calls)."""
from typing import final

@final
class OutputBuffer:
    """Queued frames and the bytes counted against ``limit``."""

    @property
    def limit(self) -> int:
        """The backpressure limit in bytes (the engine's ``backpressure_limit``)."""
