# cython: language_level=3
"""The send half of a connection: ``FrameSender``, the base of ``harpia._frames.FrameEngine``.

It holds the thin send API (``send``, ``send_text``, ``send_binary``, ``send_frame``,
``ping``, ``pong``, ``close``) over the output side (``harpia._output.OutputBuffer``) and
decides what the output's answers mean: a frame is dropped (and counted) while closing or
over the limit, crossing the limit pauses reading (or closes with 1013), falling back to a
quarter of it fires ``drain``.  Messages are compressed here when permessage-deflate was
negotiated (the engine, which also inflates, sets it up).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

from harpia._deflate cimport PerMessageDeflate, trim_output
from harpia._loop cimport LoopContext, LoopMember
from harpia._output cimport OVER_LIMIT, ByteSink, OutputBuffer
from harpia._wire cimport (FIN, MAX_CONTROL_PAYLOAD, RSV1, CloseCode, Opcode, ReadyState,
                           close_code_ok)


cdef class FrameSender(LoopMember):
    """The send half of a connection (see the module's docstring)."""

    def __cinit__(self):
        self.output = OutputBuffer.__new__(OutputBuffer)
        self.close_reason_sent = ""

    # Hooks the adapter overrides; the defaults record events for sans-I/O use.
    def drained(self):
        self._event(("drain",))

    def set_reading(self, bint reading):
        pass

    def closing_started(self):
        pass

    @cython.final
    cdef int _event(self, tuple event) except -1:
        if self.events is None:
            self.events = []
        self.events.append(event)
        return 0

    # ------------------------------------------------------------------ output
    # ``self.output`` holds the queued frames and knows the limit; the engine admits, counts,
    # writes now or at the end of the turn, and decides what crossing the limit means.

    @cython.final
    cdef bint _admit(self) noexcept:
        """The one admission check: a frame is dropped (and counted) while closing or while
        the output is over its limit."""
        if self.ready_state == ReadyState.OPEN and self.output.admits():
            return True
        self.dropped += 1
        return False

    @cython.final
    cdef Py_ssize_t _queued(self, Py_ssize_t total) except -2:
        """``total`` bytes were queued: write now if this turn's buffer is full, else at
        the end of the turn; returns as ``send``."""
        self.bytes_out += total
        if self.output.turn_full():
            self._write_output()
        else:
            self._mark_dirty()
        return self._settle(total)

    @cython.final
    cdef Py_ssize_t _settle(self, Py_ssize_t total) except -2:
        # Over the limit: reading pauses until drain (a request/response handler never sees
        # its replies dropped), or the connection closes when the route asked for that.
        if not self.output.went_over_limit():
            return total
        self.backpressure_events += 1
        self._pause_reading(PAUSE_OUTBOUND)
        if self.close_on_backpressure_limit:
            self._start_close(CloseCode.TRY_AGAIN_LATER, "backpressure limit exceeded")
        return OVER_LIMIT

    @cython.final
    cdef Py_ssize_t _send_under_limit(self, int opcode, const uint8_t *data, Py_ssize_t n,
                                      uint8_t rsv) except -2:
        """Queue a frame under the backpressure contract: its size, -1 or 0."""
        if not self._admit():
            return 0
        if opcode < Opcode.CLOSE:
            self.messages_out += 1
        return self._queued(self.output.append_frame(FIN | rsv | opcode, data, n, self.client))

    @cython.final
    cdef Py_ssize_t _send_whole(self, int opcode, uint8_t rsv, object payload,
                                const uint8_t *data, Py_ssize_t n) except -2:
        """One whole message: a large one straight to the transport (server role), else
        queued; returns as ``send``."""
        cdef Py_ssize_t total
        if self.client or not self.output.can_write_direct(n):
            return self._send_under_limit(opcode, data, n, rsv)
        if not self._admit():
            return 0
        total = self.output.write_direct(FIN | rsv | opcode, payload, data, n)
        self.messages_out += 1
        self.bytes_out += total
        return self._settle(total)

    @cython.final
    cdef Py_ssize_t _send_message(self, object message, object compress) except -2:
        """``send`` with permessage-deflate negotiated."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef Py_buffer view
        if isinstance(message, str):
            p = PyUnicode_AsUTF8AndSize(message, &n)
            return self._send_compressible(Opcode.TEXT, None, <const uint8_t *>p, n, compress)
        if PyBytes_CheckExact(message):
            return self._send_compressible(Opcode.BINARY, message,
                                           <const uint8_t *>PyBytes_AS_STRING(message),
                                           PyBytes_GET_SIZE(message), compress)
        _get_message_buffer(message, &view)
        try:
            return self._send_compressible(Opcode.BINARY, None, <const uint8_t *>view.buf,
                                           view.len, compress)
        finally:
            PyBuffer_Release(&view)

    @cython.final
    cdef Py_ssize_t _send_compressible(self, int opcode, object payload, const uint8_t *data,
                                       Py_ssize_t n, object compress) except -2:
        """Send one message compressed (RSV1 on its only frame) when the settings and
        ``compress`` say so, else plain; returns as ``send``."""
        cdef PerMessageDeflate c = self.compression
        cdef const uint8_t *out
        cdef Py_ssize_t clen
        if c is None or not c.can_compress or compress is False or \
                (compress is None and n < c.compress_threshold):
            return self._send_whole(opcode, 0, payload, data, n)
        # Decide about dropping before compressing: with a kept context, a message that
        # went through the compressor must reach the peer, or its inflater falls out of step.
        if not self._admit():
            return 0
        out = c.get_deflater().compress(data, n, &clen)
        try:
            if clen >= n and c.local_no_context_takeover:
                # Nothing gained (random or tiny data): the plain message costs the peer less.
                return self._send_whole(opcode, 0, payload, data, n)
            return self._send_whole(opcode, RSV1, None, out, clen)
        finally:
            trim_output()

    @cython.final
    cdef int _mark_dirty(self) except -1:
        # Inside feed() the output is written when the read has been parsed; elsewhere the
        # loop context writes it at the end of this loop turn, once, however many frames.
        if not self.in_feed and not self.output.corked and self.loop is not None:
            self.output.corked = True
            self.loop.add(self)
        return 0

    cdef int write_queued(self) except -1:
        # The loop context's end of turn.
        self.output.corked = False
        return self._write_output()

    @cython.final
    cdef int _write_output(self) except -1:
        if self.output.write() and self.output.awaiting_drain:
            self._check_drain()
        return 0

    @cython.final
    cdef int _check_drain(self) except -1:
        if self.output.drain_reached():
            self._resume_reading(PAUSE_OUTBOUND)
            if self.ready_state == ReadyState.OPEN:
                self.drained()
            self._output_drained()
        return 0

    @cython.final
    cdef int _pause_reading(self, uint8_t reason) except -1:
        cdef uint8_t before = self.read_pause_reasons
        self.read_pause_reasons |= reason
        if before == 0:
            self.set_reading(False)
        return 0

    @cython.final
    cdef int _resume_reading(self, uint8_t reason) except -1:
        if self.read_pause_reasons & reason:
            self.read_pause_reasons &= ~reason
            if self.read_pause_reasons == 0:
                self.set_reading(True)
        return 0

    @cython.final
    cdef int _start_close(self, int code, str reason) except -1:
        """Queue our close frame (code 0: none) and enter CLOSING."""
        cdef uint8_t payload[MAX_CONTROL_PAYLOAD]
        cdef Py_ssize_t n = 0, rlen = 0
        cdef const char *r
        if code:
            payload[0] = <uint8_t>(code >> 8)
            payload[1] = <uint8_t>code
            n = 2
            if reason:
                r = PyUnicode_AsUTF8AndSize(reason, &rlen)
                if rlen > 123:
                    rlen = 123   # only reached for our own protocol-error texts
                memcpy(&payload[2], r, rlen)
                n += rlen
        self.close_code_sent = code if code else CloseCode.NO_STATUS_RCVD
        self.close_reason_sent = reason
        self.ready_state = ReadyState.CLOSING
        # The close frame bypasses the backpressure limit: it is one small frame, once.
        self.output.append_frame(FIN | Opcode.CLOSE, payload, n, self.client)
        self._mark_dirty()
        self.closing_started()
        return 0

    cdef int _output_drained(self) except -1:
        return 0

    # ------------------------------------------------------------------ public API
    # (documented in _sender.pyi)

    def attach(self, writer, LoopContext loop=None, writelines=None, buffer_size=None,
               ByteSink sink=None):
        """Hand output to ``writer`` (or ``sink``), batched per loop turn by ``loop``."""
        self.output.sink = sink
        self.output.writer = writer
        self.output.writelines = writelines
        self.output.buffer_size = buffer_size
        self.loop = loop

    def send(self, message, compress=None):
        """Queue ``str`` as text, bytes-like as binary: frame size, -1 if now over the limit, 0 if dropped."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef Py_buffer view
        if self.compression is not None:
            return self._send_message(message, compress)
        if PyBytes_CheckExact(message):
            return self._send_whole(Opcode.BINARY, 0, message,
                                    <const uint8_t *>PyBytes_AS_STRING(message),
                                    PyBytes_GET_SIZE(message))
        if isinstance(message, str):
            p = PyUnicode_AsUTF8AndSize(message, &n)
            return self._send_whole(Opcode.TEXT, 0, None, <const uint8_t *>p, n)
        _get_message_buffer(message, &view)
        try:
            return self._send_whole(Opcode.BINARY, 0, None, <const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def send_text(self, str message):
        """Queue a text message; returns as ``send``."""
        cdef Py_ssize_t n
        cdef const char *p = PyUnicode_AsUTF8AndSize(message, &n)
        if self.compression is not None:
            return self._send_compressible(Opcode.TEXT, None, <const uint8_t *>p, n, None)
        return self._send_whole(Opcode.TEXT, 0, None, <const uint8_t *>p, n)

    def send_binary(self, message):
        """Queue a binary message; returns as ``send``."""
        if isinstance(message, str):
            raise TypeError("send_binary() takes a bytes-like object, not str")
        return self.send(message)

    def send_frame(self, int opcode, const uint8_t[::1] payload, *, bint fin=True,
                   bint rsv1=False):
        """Queue one raw frame (fragments, control frames); for tests and extensions."""
        # Protocol rules and the backpressure limit are not applied (that is the point:
        # fragments and control frames for tests and extensions); ``send`` applies both.
        cdef const uint8_t *p = &payload[0] if payload.shape[0] else NULL
        if not 0 <= opcode <= 15:
            # An opcode must fit its four bits, or it would overwrite FIN and the RSV bits.
            raise ValueError(f"opcode must be 0 to 15, got {opcode}")
        if self.ready_state != ReadyState.OPEN:
            self.dropped += 1
            return 0
        self.output.append_frame((FIN if fin else 0) | (RSV1 if rsv1 else 0) | opcode, p,
                                 payload.shape[0], self.client)
        self._mark_dirty()
        return payload.shape[0]

    def ping(self, data=b""):
        """Send a ping (payload up to 125 bytes); returns as ``send``."""
        return self._send_control(Opcode.PING, data)

    def pong(self, data=b""):
        """Send an unsolicited pong (payload up to 125 bytes); returns as ``send``."""
        return self._send_control(Opcode.PONG, data)

    @cython.final
    cdef Py_ssize_t _send_control(self, int opcode, object data) except -2:
        cdef bytes payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a {'ping' if opcode == Opcode.PING else 'pong'} payload is at "
                             f"most {MAX_CONTROL_PAYLOAD} bytes")
        return self._send_under_limit(opcode, <const uint8_t *>PyBytes_AS_STRING(payload),
                                      len(payload), 0)

    def close(self, int code=<int>CloseCode.NORMAL_CLOSURE, str reason=""):
        """Start the closing handshake; a no-op once closing has started."""
        cdef Py_ssize_t rlen
        if not close_code_ok(code):
            raise ValueError(f"close code {code} may not be sent (use 1000-1003, 1007-1014 "
                             f"or 3000-4999)")
        PyUnicode_AsUTF8AndSize(reason, &rlen)
        if rlen > MAX_CONTROL_PAYLOAD - 2:
            raise ValueError(f"a close reason is at most 123 bytes of UTF-8, got {rlen}")
        if self.ready_state != ReadyState.OPEN:
            return
        self._start_close(code, reason)
        if not self.in_feed:
            self._write_output()

    def data_to_send(self):
        """Take the bytes queued for the peer (sans-I/O use, when no writer is attached)."""
        cdef bytes data = self.output.take()
        if self.output.awaiting_drain:
            self._check_drain()
        return data

    def events_received(self):
        """Take the events recorded since the last call (sans-I/O use)."""
        cdef list events = self.events
        self.events = None
        return events if events is not None else []

    def flush_output(self):
        """Write what is queued now instead of at the end of the loop turn."""
        self.output.corked = False
        self._write_output()

    def pause_output(self, Py_ssize_t transport_buffered):
        """The transport's buffer is full: keep frames here until ``resume_output``."""
        self.output.writing_paused = True
        self.output.transport_buffered = transport_buffered

    def resume_output(self, Py_ssize_t transport_buffered):
        """The transport drained to ``transport_buffered`` bytes: write what is held."""
        self.output.writing_paused = False
        self.output.transport_buffered = transport_buffered
        self._write_output()
        self._check_drain()

    @property
    def backpressure_limit(self):
        return self.output.limit

    @property
    def transport_buffered(self):
        return self.output.transport_buffered

    @transport_buffered.setter
    def transport_buffered(self, Py_ssize_t value):
        self.output.transport_buffered = value

    @property
    def buffered_amount(self):
        return self.output.buffered()

    @property
    def reading_paused(self):
        return self.read_pause_reasons != 0


cdef int _get_message_buffer(object message, Py_buffer *view) except -1:
    try:
        PyObject_GetBuffer(message, view, PyBUF_SIMPLE)
    except TypeError:
        raise TypeError(
            f"send() takes str or a bytes-like object, not {type(message).__name__}"
        ) from None
    return 0
