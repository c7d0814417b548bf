# Included by _frames.pyx (one C module: FrameEngine calls into the cork without a
# Python call).  The cork: one per event loop; it batches output per loop turn, does the
# loop's busy polling, and owns the receive area the loop's connections read into.

cdef inline int64_t _monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class Cork:
    """The connections with output queued during this loop turn, written at its end.

    One per event loop.  ``call_soon`` is the loop's; the cork schedules itself once per
    turn, however many connections and frames it collects.

    It also does the loop's busy polling (``busy_poll`` seconds, 0 = off): after a read,
    the loop is kept turning (a callback that reschedules itself, so the loop polls with a
    zero timeout) until ``busy_poll`` has passed without another read.  A loop that sleeps
    in epoll_wait takes a wake-up to notice the next request - tens of microseconds on a
    virtual machine whose idle CPU halts - while a polling loop sees it at once.  The cost
    is CPU while traffic flows; with no traffic the loop sleeps as usual.
    """

    def __init__(self, call_soon, double busy_poll=0.0):
        if not 0.0 <= busy_poll <= 1.0:
            raise ValueError("busy_poll must be between 0 and 1 second")
        self.dirty = []
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
            self.recv_area = bytearray(RECV_AREA)
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
            self.poll_deadline_ns = _monotonic_ns() + self.poll_window_ns
            self.call_soon(self._poll_cb)
        return 0

    def note_activity(self):
        """Something arrived (a read outside the frame engine, e.g. a handshake)."""
        if self.poll_window_ns:
            self.activity()

    def _poll(self):
        cdef int64_t now = _monotonic_ns()
        if self.poll_activity:
            self.poll_activity = False
            self.poll_deadline_ns = now + self.poll_window_ns
        if now < self.poll_deadline_ns:
            self.call_soon(self._poll_cb)
        else:
            self.polling = False

    cdef int add(self, FrameEngine engine) except -1:
        self.dirty.append(engine)
        if not self.scheduled:
            self.scheduled = True
            self.call_soon(self._run_cb)
        return 0

    def run(self):
        cdef list dirty = self.dirty
        cdef FrameEngine engine
        self.dirty = []
        self.scheduled = False
        for engine in dirty:
            engine.corked = False
            try:
                engine.flush()
            except Exception as exc:      # one broken transport must not starve the rest
                engine.handler_failed(exc)
