# The send half of a connection, the base of the frame engine; see _sender.pyx.
cimport cython
from libc.stdint cimport uint8_t

from harpia._deflate cimport PerMessageDeflate
from harpia._loop cimport LoopContext, LoopMember
from harpia._output cimport OutputBuffer
from harpia._wire cimport ReadyState


cdef enum:
    # Why two reasons: reading pauses while the outgoing buffer is over its limit AND while
    # inbound bytes are held behind an async handler; either alone must keep it paused.
    PAUSE_OUTBOUND = 1
    PAUSE_INBOUND = 2
    # Why a third: see YIELD_AFTER_FRAMES in _frames.pyx.
    PAUSE_YIELD = 4


cdef class FrameSender(LoopMember):
    cdef readonly bint client
    cdef readonly bint close_on_backpressure_limit
    cdef public int ready_state
    cdef readonly int close_code_sent
    cdef readonly object close_reason_sent
    cdef readonly Py_ssize_t dropped
    # --- counters for app.stats(): plain C increments, nothing when nobody reads them ---
    cdef readonly unsigned long long messages_out
    cdef readonly unsigned long long bytes_out
    cdef readonly unsigned long long backpressure_events
    # permessage-deflate, when negotiated (None otherwise: the plain paths never look further)
    cdef readonly PerMessageDeflate compression
    cdef uint8_t read_pause_reasons
    # --- the frames queued this loop turn, written at its end ---
    cdef OutputBuffer output
    cdef LoopContext loop
    cdef bint in_feed              # parsing a read: its output is written when it ends
    cdef list events               # the default hooks' record (sans-I/O use)

    # Final: a direct C call, not a vtable call (Python subclasses cannot override them).
    @cython.final
    cdef int _event(self, tuple event) except -1
    @cython.final
    cdef bint _admit(self) noexcept
    @cython.final
    cdef Py_ssize_t _queued(self, Py_ssize_t total) except -2
    @cython.final
    cdef Py_ssize_t _settle(self, Py_ssize_t total) except -2
    @cython.final
    cdef Py_ssize_t _send_under_limit(self, int opcode, const uint8_t *data, Py_ssize_t n,
                                      uint8_t rsv) except -2
    @cython.final
    cdef Py_ssize_t _send_whole(self, int opcode, uint8_t rsv, object payload,
                                const uint8_t *data, Py_ssize_t n) except -2
    @cython.final
    cdef Py_ssize_t _send_control(self, int opcode, object data) except -2
    @cython.final
    cdef Py_ssize_t _send_compressible(self, int opcode, object payload, const uint8_t *data,
                                       Py_ssize_t n, object compress) except -2
    @cython.final
    cdef Py_ssize_t _send_message(self, object message, object compress) except -2
    @cython.final
    cdef int _start_close(self, int code, str reason) except -1
    @cython.final
    cdef int _mark_dirty(self) except -1
    @cython.final
    cdef int _write_output(self) except -1
    @cython.final
    cdef int _check_drain(self) except -1
    @cython.final
    cdef int _pause_reading(self, uint8_t reason) except -1
    @cython.final
    cdef int _resume_reading(self, uint8_t reason) except -1
    # Overridden by the engine: what to do once the output drained (its held input).
    cdef int _output_drained(self) except -1

    cdef inline Py_ssize_t _queue_serialized(self, const char *frame, Py_ssize_t n) except -2:
        # Queue a frame serialized elsewhere (a publish: built once, copied to each); returns
        # as ``send``.  Inline, as what it calls: the publish loop runs it per subscriber
        # without a call.  Only a full turn or a crossed limit take ``_queued``'s way.
        cdef OutputBuffer out = self.output
        if self.ready_state != ReadyState.OPEN or not out.admits():
            self.dropped += 1
            return 0
        self.messages_out += 1
        out.append_serialized(frame, n)
        if out.turn_full() or out.queued.len + out.transport_buffered > out.limit:
            return self._queued(n)
        self.bytes_out += n
        if not self.in_feed and not out.corked and self.loop is not None:
            out.corked = True
            self.loop.add(self)
        return n
