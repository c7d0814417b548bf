# cython: language_level=3
"""``ClosedTotals``: the engine counters of the connections that closed, summed in C.

Every connection adds its six counters here as it closes.  Read one property at a time
from Python, the six cost about 3,000 instructions and the sums as many again (measured
with callgrind): as much as reading the whole request head in ``_upgrade``.  Here it is
one call of a few dozen.
"""
from harpia._frames cimport FrameEngine


cdef class ClosedTotals:
    """Sums of ``messages_in``, ``messages_out``, ``bytes_in``, ``bytes_out``,
    ``backpressure_events`` and ``dropped`` over the connections added."""

    cdef readonly unsigned long long messages_in
    cdef readonly unsigned long long messages_out
    cdef readonly unsigned long long bytes_in
    cdef readonly unsigned long long bytes_out
    cdef readonly unsigned long long backpressure_events
    cdef readonly unsigned long long dropped

    def add(self, FrameEngine engine not None):
        """Add the counters of ``engine`` (a connection that closed)."""
        self.messages_in += engine.messages_in
        self.messages_out += engine.messages_out
        self.bytes_in += engine.bytes_in
        self.bytes_out += engine.bytes_out
        self.backpressure_events += engine.backpressure_events
        self.dropped += <unsigned long long>engine.dropped
