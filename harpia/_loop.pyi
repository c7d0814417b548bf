"""What the connections of one event loop share: output batching per loop turn (auto-cork),
busy polling and the receive area reads land in (compiled with Cython)."""
from collections.abc import Callable
from typing import final

from typing_extensions import disjoint_base

@disjoint_base
class LoopMember:
    """A connection of a ``LoopContext``: its queued output is written at the end of the turn
    (``harpia._frames.FrameEngine`` derives from it)."""

@final
class LoopContext:
    """What the connections of one event loop share; one per loop."""

    def __init__(self, call_soon: Callable[[Callable[[], object]], object], busy_poll: float = 0.0) -> None:
        """``call_soon`` is the loop's.  ``busy_poll``: seconds the loop keeps polling
        (instead of sleeping) after a read; 0 turns it off."""
    def receive_area(self) -> memoryview:
        """The writable area this loop's connections read into, one read at a time."""
    @property
    def busy_poll(self) -> float:
        """The polling window in seconds (0: off)."""
    @property
    def poll_window_ns(self) -> int:
        """The polling window in nanoseconds (0: off)."""
    @property
    def polling(self) -> bool:
        """True while the loop is being kept polling (a read came within the window)."""
    def note_activity(self) -> None:
        """Something arrived outside the frame engine (a handshake): keep polling."""
    def run(self) -> None:
        """Write every connection queued since the last run (the scheduled callback)."""
