# The output side of a connection: the frames queued this loop turn and the backpressure
# accounting.  The frame engine holds one as a typed attribute (direct C calls).
cimport cython
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

from harpia._buffer cimport ByteBuffer, buffer_copy_bytes, buffer_reserve, buffer_trim
from harpia._wire cimport header_size, write_header


cdef enum:
    # What a send answers when the frame was queued and the buffer is now over the limit
    # (else the frame's size; 0 when the engine did not admit it).
    OVER_LIMIT = -1
    # Why these sizes: a frame queued this turn is copied once into the buffer; past
    # CORK_FLUSH_AT the buffer goes to the transport at once so the kernel absorbs what it
    # can (a handler sending in a loop is not capped at one turn's worth).  A payload of
    # DIRECT_WRITE_AT bytes or more skips the buffer (no copy at all from a bytes object).
    # A buffer over KEEP_BUFFER is freed after use: an idle connection holds nothing.
    CORK_FLUSH_AT = 65536
    DIRECT_WRITE_AT = 65536
    KEEP_BUFFER = 4096


cdef class ByteSink:
    # Where output can go at C level, without a bytes object or a Python call per write
    # (harpia._transport.SocketTransport is one).
    cdef int write_ptr(self, const char *p, Py_ssize_t n) except -1
    # The rest of ``owner`` (a bytes object) from ``p``: a sink may keep it by reference.
    cdef int write_owned(self, object owner, const char *p, Py_ssize_t n) except -1
    # ``head`` then the payload (``owner`` as for write_owned, or None: copy if kept), in
    # one call so a sink can hand both to the kernel at once.
    cdef int write_pair(self, const char *head, Py_ssize_t hn, object owner, const char *p,
                        Py_ssize_t n) except -1
    cdef Py_ssize_t buffered_size(self) noexcept


@cython.final
cdef class OutputBuffer:
    cdef ByteBuffer queued
    cdef readonly Py_ssize_t limit
    cdef Py_ssize_t transport_buffered
    cdef bint writing_paused
    cdef bint awaiting_drain         # went over the limit; drain not yet reached
    cdef bint corked                 # in the loop context's list for this turn
    cdef object writer
    cdef object writelines
    cdef object buffer_size
    cdef ByteSink sink               # when set, used instead of writer and buffer_size

    cdef Py_ssize_t append_masked_frame(self, uint8_t first_byte, const uint8_t *data,
                                        Py_ssize_t n) except -1
    cdef Py_ssize_t write_direct(self, uint8_t first_byte, object payload, const uint8_t *data,
                                 Py_ssize_t n) except -1
    cdef bint drain_reached(self) except -1
    cdef bytes take(self)
    cdef void discard(self) noexcept

    cdef inline Py_ssize_t buffered(self) noexcept:
        return self.queued.len + self.transport_buffered

    cdef inline bint admits(self) noexcept:
        # The one admission check: a send is dropped while the buffer is over its limit.
        return self.queued.len + self.transport_buffered <= self.limit

    cdef inline bint went_over_limit(self) noexcept:
        # True if the buffer is over the limit now; drain is then awaited.
        if self.queued.len + self.transport_buffered > self.limit:
            self.awaiting_drain = True
            return True
        return False

    cdef inline bint turn_full(self) noexcept:
        return self.queued.len >= CORK_FLUSH_AT and not self.writing_paused

    cdef inline bint can_write_direct(self, Py_ssize_t n) noexcept:
        return n >= DIRECT_WRITE_AT and (self.writer is not None or self.sink is not None) \
            and not self.writing_paused

    # The per-frame and per-turn methods are inline: the engine's units call them from
    # other modules, where a method of this class is otherwise a call through its vtable
    # that the compiler cannot fold into the caller.

    cdef inline Py_ssize_t append_frame(self, uint8_t first_byte, const uint8_t *data,
                                        Py_ssize_t n, bint masked) except -1:
        # Serialize a frame into the buffer; its size on the wire.  The caller admitted it
        # (``admits``), or it bypasses the limit (a close frame).
        cdef Py_ssize_t total, hlen
        cdef uint8_t *out
        if masked:
            return self.append_masked_frame(first_byte, data, n)
        total = header_size(n, False) + n
        buffer_reserve(&self.queued, total)
        out = <uint8_t *>self.queued.data + self.queued.len
        hlen = write_header(out, first_byte, n, NULL)
        memcpy(out + hlen, data, n)
        self.queued.len += total
        return total

    cdef inline Py_ssize_t append_serialized(self, const char *frame, Py_ssize_t n) except -1:
        # Queue a frame serialized elsewhere (a publish: built once, copied to each).
        buffer_reserve(&self.queued, n)
        memcpy(self.queued.data + self.queued.len, frame, n)
        self.queued.len += n
        return n

    cdef inline bint write(self) except -1:
        # Hand what is queued to the sink or the writer (unless paused); True if anything went.
        cdef bytes data
        cdef Py_ssize_t n = self.queued.len
        if n == 0 or self.writing_paused:
            return False
        if self.sink is not None:
            self.queued.len = 0          # the bytes stay where they are until trimmed
            self.sink.write_ptr(self.queued.data, n)
            buffer_trim(&self.queued, KEEP_BUFFER)
            return True
        if self.writer is None:
            return False
        data = buffer_copy_bytes(&self.queued)
        self.queued.len = 0
        buffer_trim(&self.queued, KEEP_BUFFER)
        self.writer(data)
        return True
