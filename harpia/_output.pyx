# cython: language_level=3
"""A connection's output: frames queued during a loop turn, written once at its end.

The buffer says whether a frame is admitted (``admits``: not over the limit), queues it,
and tells when the bytes buffered here and in the transport crossed the backpressure limit
(``went_over_limit``) and when they fell back (``drain_reached``); the frame engine decides
what follows (drop, pause reading, close with 1013, fire ``drain``).  Nothing here knows
about WebSocket state or asyncio: the writer is any ``writer(bytes)`` callable, or a
``ByteSink`` that takes the bytes where they are.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t

from harpia._buffer cimport buffer_free
from harpia._wire cimport random_mask_key

cdef extern from "_mask.h" nogil:
    void harpia_mask(unsigned char *dst, const unsigned char *src, size_t n,
                     const unsigned char *key, size_t phase)


cdef class ByteSink:
    """Takes output at C level (see _output.pxd); this base takes nothing."""

    cdef int write_ptr(self, const char *p, Py_ssize_t n) except -1:
        return 0

    cdef int write_owned(self, object owner, const char *p, Py_ssize_t n) except -1:
        return self.write_ptr(p, n)

    cdef int write_pair(self, const char *head, Py_ssize_t hn, object owner, const char *p,
                        Py_ssize_t n) except -1:
        self.write_ptr(head, hn)
        if owner is not None:
            return self.write_owned(owner, p, n)
        return self.write_ptr(p, n)

    cdef Py_ssize_t buffered_size(self) noexcept:
        return 0


cdef class OutputBuffer:
    """Queued frames and backpressure accounting against ``limit`` bytes (set by the
    engine that owns it, as are the writer callables)."""

    def __dealloc__(self):
        buffer_free(&self.queued)

    cdef Py_ssize_t append_masked_frame(self, uint8_t first_byte, const uint8_t *data,
                                        Py_ssize_t n) except -1:
        """``append_frame`` for the client role: the payload masked with a fresh key."""
        cdef uint8_t key[4]
        cdef Py_ssize_t total = header_size(n, True) + n
        cdef Py_ssize_t hlen
        cdef uint8_t *out
        buffer_reserve(&self.queued, total)
        out = <uint8_t *>self.queued.data + self.queued.len
        random_mask_key(key)
        hlen = write_header(out, first_byte, n, key)
        harpia_mask(out + hlen, data, n, key, 0)
        self.queued.len += total
        return total

    cdef Py_ssize_t write_direct(self, uint8_t first_byte, object payload, const uint8_t *data,
                                 Py_ssize_t n) except -1:
        """A large unmasked frame straight to the transport, after what is queued: the
        queue and the header in one buffer, then the payload itself (``payload``, a bytes
        object, is not copied at all).  A sink takes both in one call: a header sent on
        its own is a segment of its own, and a wake-up of the peer for a few bytes."""
        cdef Py_ssize_t total = header_size(n, False) + n
        cdef Py_ssize_t queued = self.queued.len
        cdef bytes head
        cdef char *p
        if self.sink is not None:
            # What is queued and the header from the buffer, the payload from where it is.
            buffer_reserve(&self.queued, total - n)
            write_header(<uint8_t *>self.queued.data + queued, first_byte, n, NULL)
            self.queued.len = 0
            self.sink.write_pair(self.queued.data, queued + total - n, payload,
                                 <const char *>data, n)
            self.transport_buffered = self.sink.buffered_size()
            return total
        if payload is not None:
            head = PyBytes_FromStringAndSize(NULL, queued + total - n)
            p = PyBytes_AS_STRING(head)
            memcpy(p, self.queued.data, queued)
            write_header(<uint8_t *>p + queued, first_byte, n, NULL)
            self.queued.len = 0
            if self.writelines is not None:
                self.writelines((head, payload))
            else:
                # Two writes rather than a copy: write() is what every loop's flow control
                # is sure to watch (asyncio 3.12.0-3.12.8 and 3.13.0-3.13.1 never pause
                # the protocol for writelines()).
                self.writer(head)
                self.writer(payload)
        else:
            head = PyBytes_FromStringAndSize(NULL, queued + total)
            p = PyBytes_AS_STRING(head)
            memcpy(p, self.queued.data, queued)
            write_header(<uint8_t *>p + queued, first_byte, n, NULL)
            memcpy(p + queued + total - n, data, n)
            self.queued.len = 0
            self.writer(head)
        if self.buffer_size is not None:
            # Ask the transport what it holds now, rather than trusting that its
            # pause_writing came (and came with the final count): once per large message.
            self.transport_buffered = self.buffer_size()
        return total

    cdef bint drain_reached(self) except -1:
        """After going over the limit: True once the bytes buffered here and in the
        transport fell back to a quarter of it.  Hysteresis: drain fires once, not on
        every write that nibbles at the buffer."""
        if not self.awaiting_drain:
            return False
        if not self.writing_paused:
            if self.sink is not None:
                self.transport_buffered = self.sink.buffered_size()
            elif self.buffer_size is not None:
                self.transport_buffered = self.buffer_size()
        if self.queued.len + self.transport_buffered <= self.limit // 4:
            self.awaiting_drain = False
            return True
        return False

    cdef bytes take(self):
        """What is queued, as bytes, leaving the buffer empty (sans-I/O use)."""
        cdef bytes data = buffer_copy_bytes(&self.queued)
        self.queued.len = 0
        return data

    cdef void discard(self) noexcept:
        """The transport is gone: drop what is queued, write nothing more."""
        self.writer = None
        self.writelines = None
        self.buffer_size = None
        self.sink = None
        buffer_free(&self.queued)
