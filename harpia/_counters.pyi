"""The engine counters of closed connections, summed in C (compiled with Cython)."""
from typing_extensions import disjoint_base

from ._frames import FrameEngine

@disjoint_base
class ClosedTotals:
    """Sums of the six engine counters over the connections added."""
    @property
    def messages_in(self) -> int: ...
    @property
    def messages_out(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def backpressure_events(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    def add(self, engine: FrameEngine) -> None:
        """Add the counters of ``engine`` (a connection that closed)."""
