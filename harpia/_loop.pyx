# cython: language_level=3
"""What the connections of one event loop share: a ``LoopContext``.

- Output batching (auto-cork): connections that queued frames during a loop turn are
  written once at its end, however many frames each holds.
- Busy polling (``busy_poll`` seconds, 0 = off): after a read, the loop is kept turning
  (a callback that reschedules itself, so the loop polls with a zero timeout) until
  ``busy_poll`` has passed without another read.  A loop that sleeps in epoll_wait takes
  a wake-up to notice the next request - tens of microseconds on a virtual machine whose
  idle CPU halts - while a polling loop sees it at once.  The cost is CPU while traffic
  flows; with no traffic the loop sleeps as usual.
- The receive area: reads on one loop never interleave, so its connections share one.
"""
from cpython.list cimport PyList_GET_ITEM
from libc.stdint cimport int64_t

cdef enum:
    # As uvloop's own read buffer.
    RECEIVE_AREA_SIZE = 262144


cdef class LoopMember:
    """A connection of a ``LoopContext`` (the frame engine derives from it)."""

    cdef int write_queued(self) except -1:
        return 0


cdef class LoopContext:
    """What the connections of one event loop share: output batching per loop turn, busy
    polling and the receive area.  ``call_soon`` is the loop's."""

    def __init__(self, call_soon, double busy_poll=0.0):
        if not 0.0 <= busy_poll <= 1.0:
            raise ValueError("busy_poll must be between 0 and 1 second")
        self.queued = []
        self.scheduled = False
        self.call_soon = call_soon
        self._run_cb = self.run
        self.poll_window_ns = <int64_t>(busy_poll * 1e9)
        self.poll_deadline_ns = 0
        self.polling = False
        self.poll_activity = False
        self._poll_cb = self._poll

    def receive_area(self):
        """The writable area that connections of this loop read into, one read at a time."""
        if self.recv_view is None:
            self.recv_area = bytearray(RECEIVE_AREA_SIZE)
            self.recv_view = memoryview(self.recv_area)
        return self.recv_view

    @property
    def busy_poll(self):
        return self.poll_window_ns / 1e9

    cdef int activity(self) except -1:
        # Called per read: cheap, a flag; the polling callback turns it into a deadline.
        self.poll_activity = True
        if not self.polling:
            self.polling = True
            self.poll_deadline_ns = monotonic_ns() + self.poll_window_ns
            self.call_soon(self._poll_cb)
        return 0

    def note_activity(self):
        """Something arrived (a read outside the frame engine, e.g. a handshake)."""
        if self.poll_window_ns:
            self.activity()

    def _poll(self):
        cdef int64_t now = monotonic_ns()
        if self.poll_activity:
            self.poll_activity = False
            self.poll_deadline_ns = now + self.poll_window_ns
        if now < self.poll_deadline_ns:
            self.call_soon(self._poll_cb)
        else:
            self.polling = False

    def run(self):
        """Write every member queued since the last run (the scheduled callback)."""
        cdef list queued = self.queued
        cdef Py_ssize_t i = 0, n = len(queued)
        cdef LoopMember member = None
        self.queued = []
        self.scheduled = False
        # One try for the whole turn, entered again after a failure, rather than one per
        # member: the list holds only members (``add`` is typed), so no check per item.
        try:
            while i < n:
                try:
                    while i < n:
                        member = <LoopMember>PyList_GET_ITEM(queued, i)
                        i += 1
                        member.write_queued()
                except Exception as exc:  # one broken transport must not starve the rest
                    (<object>member).handler_failed(exc)
        finally:
            if i < n:
                # handler_failed raised: the members not written yet go first next turn
                # (they are still marked as queued, so nothing else would queue them).
                self.queued[0:0] = queued[i:]
                if not self.scheduled:
                    self.scheduled = True
                    self.call_soon(self._run_cb)
