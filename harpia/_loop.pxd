# What the connections of one event loop share; see _loop.pyx.
cimport cython
from libc.stdint cimport int64_t

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_MONOTONIC


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class LoopMember:
    # A connection of a LoopContext (the frame engine): what the context calls back.
    cdef int write_queued(self) except -1


@cython.final
cdef class LoopContext:
    cdef list queued                # members with output queued this turn
    cdef bint scheduled
    cdef object call_soon
    cdef object _run_cb
    # --- busy polling (off when poll_window_ns == 0) ---
    cdef readonly int64_t poll_window_ns
    cdef int64_t poll_deadline_ns
    cdef readonly bint polling
    cdef bint poll_activity
    cdef object _poll_cb
    # --- the receive area shared by the loop's connections (reads are one at a time) ---
    cdef bytearray recv_area
    cdef object recv_view

    cdef int activity(self) except -1

    cdef inline int add(self, LoopMember member) except -1:
        # Inline: a publish calls it once per subscriber, from another module.
        self.queued.append(member)
        if not self.scheduled:
            self.scheduled = True
            self.call_soon(self._run_cb)
        return 0
