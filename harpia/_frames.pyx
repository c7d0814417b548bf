# cython: language_level=3
"""harpia's frame engine: RFC 6455 framing, sans-I/O.

Bytes go in through ``feed`` (or ``data_received``); whole messages go to the bound
message handler (or to ``events_received()`` when none is bound); frames to send collect
in an output buffer that is handed to ``writer`` once per event-loop turn (auto-cork), or
taken with ``data_to_send()``.  Nothing here knows about sockets or asyncio: the asyncio
adapter (``harpia.connection``) subclasses ``FrameEngine`` and overrides the event hooks.

``FrameEngine`` keeps what runs on every frame: the input side (``get_buffer``/
``buffer_updated`` or ``feed`` -> ``_parse`` -> ``_header_complete`` -> ``_payload_chunk``
-> ``_frame_complete`` -> ``_deliver``), control frames and the hooks.  Its parts are
units of their own, each with a .pxd: the send half it derives from (``_sender``: the thin
send API), the output side and backpressure accounting (``_output``), what a loop's
connections share (``_loop``), the wire format (``_wire``: opcodes, close codes, headers),
the growable buffer (``_buffer``) and permessage-deflate (``_deflate``).  Publish
(``_publish``) and the single-frame tools (``_frame_tools``) build on it.
"""
cimport cython
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from harpia._buffer cimport (buffer_doubling_room, buffer_free, buffer_resize, buffer_take_bytes,
                             message_done)
from harpia._deflate cimport (INFLATE_OK, INFLATE_PAUSED, INFLATE_RATIO, INFLATE_TOO_BIG,
                              PerMessageDeflate)
from harpia._loop cimport monotonic_ns
from harpia._sender cimport PAUSE_INBOUND, PAUSE_YIELD, FrameSender
from harpia._wire cimport (FIN, MAX_CONTROL_PAYLOAD, RSV1, CloseCode, Opcode, ReadyState,
                           close_code_ok, decode_length, length_field_size, length_minimal)

# The single-frame tools, also reachable from here as they always were.
from harpia._frame_tools import apply_mask, serialize_frame, unmask_inplace, utf8_valid
from harpia._wire import is_valid_close_code

cdef extern from "_mask.h" nogil:
    void harpia_mask(unsigned char *dst, const unsigned char *src, size_t n,
                     const unsigned char *key, size_t phase)

cdef extern from "_utf8.h" nogil:
    int harpia_utf8_feed(uint32_t *state, const unsigned char *s, size_t n)
    int harpia_utf8_complete(uint32_t state)

cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    char *PyByteArray_AS_STRING(object o)
    int PyBUF_WRITE

# Ready states as plain ints (``harpia.OPEN`` ...); ``harpia._wire.ReadyState`` names them.
CONNECTING = <int>ReadyState.CONNECTING
OPEN = <int>ReadyState.OPEN
CLOSING = <int>ReadyState.CLOSING
CLOSED = <int>ReadyState.CLOSED

cdef enum:
    SMALL_TEXT = 512           # a text frame this short is unmasked on the stack
    # Reads go to the loop context's shared area unless a data frame has DIRECT_READ_AT
    # bytes or more still to come: then straight into the message.  RECEIVE_SPARE: the
    # area of an engine without a loop context (a custom transport).
    RECEIVE_SPARE = 65536
    DIRECT_READ_AT = 65536
    DIRECT_GROW_AT = 16384
    # Why reading also pauses to yield (PAUSE_YIELD, next to the two reasons in
    # _sender.pxd): libuv (uvloop) reads a socket that stays full up to 32 times (256,000
    # bytes each) in one loop pass, where asyncio's selector loop reads it once.  After a
    # read that carried YIELD_AFTER_FRAMES frames or more, reading stops until the next
    # loop turn: a client streaming tiny frames gets about one read's worth of handler
    # calls per pass on either loop and cannot starve the others, while bulk reads (few
    # frames each) are not interrupted.
    YIELD_AFTER_FRAMES = 1024
    # The same for permessage-deflate, counted in bytes inflated rather than frames: a 16 KB
    # frame can inflate to 16 MiB (~15 ms of CPU), so inflating stops, even inside a frame,
    # once a read has produced INFLATE_YIELD_AT bytes; the rest waits for the next loop
    # turn.  Each connection then costs the others about 0.3 ms of zlib per pass.
    INFLATE_YIELD_AT = 262144
    # One message handler call in this many is timed when an engine has a handler_timer.
    HANDLER_SAMPLE = 64

# Appended to a compressed message before inflating its end (RFC 7692 section 7.2.2).
cdef const uint8_t *DEFLATE_TAIL = <const uint8_t *>b"\x00\x00\xff\xff"

cdef uint32_t _clock = 0
# Counts message handler calls of engines with a handler_timer (see _deliver).
cdef uint64_t _handler_tick = 0

def set_clock(uint32_t seconds):
    """Set the coarse clock that ``last_seen`` is stamped with (the idle sweeper calls it)."""
    global _clock
    _clock = seconds

cdef class FrameEngine(FrameSender):
    """One WebSocket connection's protocol state: the parser here, the send side inherited.

    ``client=False`` is the server role (incoming frames must be masked, outgoing are not);
    ``client=True`` the reverse.  Limits are checked when a frame header arrives, before any
    payload is buffered.
    """

    def __cinit__(self):
        self.msg.in_bytes = True
        self.close_reason_received = ""

    def __init__(self, *, bint client=False, Py_ssize_t max_payload_length=16 * 1024 * 1024,
                 Py_ssize_t backpressure_limit=1024 * 1024,
                 bint close_on_backpressure_limit=False,
                 Py_ssize_t inbound_limit=64 * 1024):
        if max_payload_length < 0 or backpressure_limit < 0 or inbound_limit < 0:
            raise ValueError("limits must not be negative")
        self.client = client
        self.max_payload_length = max_payload_length
        self.output.limit = backpressure_limit
        self.close_on_backpressure_limit = close_on_backpressure_limit
        self.inbound_limit = inbound_limit
        self.ready_state = ReadyState.OPEN
        self.last_seen = _clock

    def __dealloc__(self):
        self._drop_compression()
        buffer_free(&self.msg)

    # ------------------------------------------------------------------ hooks
    # The adapter overrides these; the defaults record events for sans-I/O use.

    def ping_received(self, bytes payload):
        self._event(("ping", payload))

    def pong_received(self, bytes payload):
        self._event(("pong", payload))

    def close_received(self, int code, str reason):
        self._event(("close", code, reason))

    def protocol_failed(self, int code, str reason):
        self._event(("protocol_error", code, reason))

    def handler_failed(self, exc):
        self._event(("handler_error", exc))

    def start_async(self, awaitable):
        """Run an async handler's awaitable; return True if it is still pending (then
        delivery pauses until ``resume_delivery()``)."""
        raise TypeError("an async message handler needs an event loop adapter")

    # ------------------------------------------------------------------ input

    def feed(self, data):
        """Parse ``data`` (bytes-like); deliver every complete message, then flush."""
        self._feed(data)

    def data_received(self, data):
        self._feed(data)

    # The transport's other way in (asyncio.BufferedProtocol): it reads straight into the
    # area get_buffer() returns, then says how much landed.  Usually that area is the loop
    # context's, shared by the loop's connections (reads never interleave), so a read costs
    # no allocation; in the middle of a large frame it is the message itself, so the payload
    # goes from the kernel to the message's bytes with no copy between, unmasked in place.
    def get_buffer(self, Py_ssize_t sizehint):
        cdef Py_ssize_t window = self._direct_window()
        if window:
            self.recv_direct = True
            return PyMemoryView_FromMemory(self.msg.data + self.msg.len, window, PyBUF_WRITE)
        self.recv_direct = False
        if self.loop is not None:
            return self.loop.receive_area()
        if self.recv_spare is None:
            self.recv_spare = bytearray(RECEIVE_SPARE)
        return self.recv_spare

    def buffer_updated(self, Py_ssize_t nbytes):
        if self.recv_direct:
            self.recv_direct = False
            self._read_begin(nbytes)
            self.in_feed = True
            self.read_frames = self.read_inflated = 0
            try:
                self._payload_direct(nbytes)
            finally:
                self.in_feed = False
            self._read_end()
        elif self.loop is not None and self.loop.recv_area is not None:
            self._feed_ptr(<const uint8_t *>PyByteArray_AS_STRING(self.loop.recv_area), nbytes,
                           None)
        else:
            self._feed_ptr(<const uint8_t *>PyByteArray_AS_STRING(self.recv_spare), nbytes, None)

    @cython.final
    cdef int _feed(self, object data) except -1:
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            return self._feed_ptr(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                                  data)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._feed_ptr(<const uint8_t *>view.buf, view.len, None)
        finally:
            PyBuffer_Release(&view)
        return 0

    @cython.final
    cdef int _feed_ptr(self, const uint8_t *data, Py_ssize_t n, object owner) except -1:
        """Parse ``n`` bytes; ``owner`` is the bytes object they live in, or None when the
        memory is only borrowed (then what must be held is copied)."""
        cdef Py_ssize_t used = 0
        self._read_begin(n)
        if self.input_closed:
            return 0
        if self._delivery_blocked():
            self._hold(owner if owner is not None else PyBytes_FromStringAndSize(<char *>data, n))
            return 0
        self.in_feed = True
        self.read_frames = self.read_inflated = 0
        try:
            self._parse(data, n, &used)
            if self._delivery_blocked() and used < n and not self.input_closed:
                self._hold(owner[used:] if owner is not None
                           else PyBytes_FromStringAndSize(<char *>data + used, n - used))
        finally:
            self.in_feed = False
        return self._read_end()

    @cython.final
    cdef int _hold(self, bytes rest) except -1:
        if self.held is None:
            self.held = []
        self.held.append(rest)
        self.held_size += PyBytes_GET_SIZE(rest)
        if self.held_size > self.inbound_limit:
            self._pause_reading(PAUSE_INBOUND)
        return 0

    @cython.final
    cdef int _read_begin(self, Py_ssize_t n) except -1:
        self.last_seen = _clock
        self.bytes_in += n
        if self.loop is not None and self.loop.poll_window_ns:
            self.loop.activity()
        return 0

    @cython.final
    cdef int _read_end(self) except -1:
        if self.output.queued.len:
            self._write_output()
        if (self.inflate_yielding or self.read_frames >= YIELD_AFTER_FRAMES and
                self.loop is not None and not self.input_closed) and \
                not (self.read_pause_reasons & PAUSE_YIELD):
            self._pause_reading(PAUSE_YIELD)
            self.loop.call_soon(self._end_yield)
        return 0

    @cython.final
    cdef Py_ssize_t _direct_window(self) except -1:
        """How many bytes the next read may put straight into the message (0: none).

        Only inside a plain data frame with DIRECT_READ_AT bytes or more still to come; a
        read at most doubles what arrived, never reaching for the length a header announced."""
        cdef Py_ssize_t left, room, cap
        if not self.in_payload or self.frame_opcode >= Opcode.CLOSE or self.msg_compressed \
                or self.input_closed or self._delivery_blocked() or self.frame_left < DIRECT_READ_AT:
            return 0
        left = <Py_ssize_t>self.frame_left
        room = self.msg.cap - self.msg.len
        # Grow only when little room is left, and then by at least DIRECT_READ_AT: a
        # client trickling a few bytes per read must not cost a realloc per read.
        if room < left and room < DIRECT_GROW_AT:
            cap = 2 * self.msg.len
            if cap < self.msg.len + DIRECT_READ_AT:
                cap = self.msg.len + DIRECT_READ_AT
            if cap > self.msg.len + left:
                cap = self.msg.len + left
            buffer_resize(&self.msg, cap)
        room = buffer_doubling_room(&self.msg, DIRECT_READ_AT)     # as grown, even in a spare
        return room if room < left else left

    def _end_yield(self):
        if self.inflate_yielding:
            # Parse what was held back, with a fresh budget; stop again if it runs out.
            self.inflate_yielding = False
            self.read_inflated = 0
            self._parse_held()
            if self.inflate_yielding and not self.input_closed:
                self.loop.call_soon(self._end_yield)
                return
        self._resume_reading(PAUSE_YIELD)

    def pause_delivery(self):
        """Hold incoming messages (bytes are kept, bounded by ``inbound_limit``) until
        ``resume_delivery()``; used while an async ``open`` handler runs."""
        self.delivery_paused = True

    def resume_delivery(self):
        """Continue after an async handler finished: parse what was held meanwhile."""
        if not self.delivery_paused:
            return
        self.delivery_paused = False
        self._parse_held()

    @cython.final
    cdef bint _delivery_blocked(self) noexcept:
        # Delivery stops while an async handler runs, and while the output is over its
        # limit: a request/response handler must not see its replies dropped because the
        # client reads slowly, so its next requests wait (and reading pauses).
        return self.delivery_paused or self.output.awaiting_drain or self.inflate_yielding

    @cython.final
    cdef int _parse_held(self) except -1:
        """Parse the bytes held while delivery was stopped, until it stops again."""
        cdef bytes chunk
        cdef Py_ssize_t used
        if self.in_feed or self._delivery_blocked():
            return 0
        self.in_feed = True
        try:
            while self.held and not self._delivery_blocked() and not self.input_closed:
                chunk = self.held.pop(0)
                self.held_size -= PyBytes_GET_SIZE(chunk)
                used = 0
                self._parse(<const uint8_t *>PyBytes_AS_STRING(chunk), PyBytes_GET_SIZE(chunk),
                            &used)
                if self._delivery_blocked() and used < PyBytes_GET_SIZE(chunk) and not self.input_closed:
                    self.held.insert(0, chunk[used:])
                    self.held_size += PyBytes_GET_SIZE(chunk) - used
        finally:
            self.in_feed = False
        if self.input_closed and self.held:
            self.held = None
            self.held_size = 0
        if self.held_size <= self.inbound_limit // 2:
            self._resume_reading(PAUSE_INBOUND)
        if self.output.queued.len:
            self._write_output()
        return 0

    @cython.final
    cdef int _fail(self, int code, str reason) except -1:
        """Fail the connection (RFC 6455 section 7.1.7): send a close frame, read no more."""
        self.input_closed = True
        self._msg_reset()
        if self.held is not None:
            self.held = None
            self.held_size = 0
        if self.ready_state == ReadyState.OPEN:
            self._start_close(code, reason)
        self.protocol_failed(code, reason)
        return 0

    @cython.final
    cdef int _parse(self, const uint8_t *data, Py_ssize_t n, Py_ssize_t *used) except -1:
        cdef Py_ssize_t pos = 0, take, plen, hlen, avail
        cdef uint8_t b0, b1, len7
        cdef object message
        cdef char small[SMALL_TEXT]
        cdef char *dst
        while pos < n:
            if self.input_closed or self._delivery_blocked():
                break
            if self.in_payload:
                take = n - pos
                if <uint64_t>take > self.frame_left:
                    take = <Py_ssize_t>self.frame_left
                take = self._payload_chunk(data + pos, take)
                pos += take
                self.frame_left -= take
                if self.frame_left == 0:
                    self.in_payload = False
                    self._frame_complete()
                continue

            # Fast path: a whole unfragmented text/binary frame with a short header, all in
            # this read, and no message in progress.  It becomes a str/bytes with one copy.
            avail = n - pos
            if self.hdr_have == 0 and self.msg_opcode == 0 and avail >= 2:
                b0 = data[pos]
                b1 = data[pos + 1]
                if (b0 == FIN | Opcode.TEXT or b0 == FIN | Opcode.BINARY) and \
                        ((b1 & 0x80) != 0) != self.client:
                    len7 = b1 & 0x7F
                    hlen = 2 + length_field_size(len7)
                    plen = -1
                    if len7 < 127 and avail >= hlen:
                        plen = <Py_ssize_t>decode_length(data + pos)
                        if not length_minimal(plen, len7):
                            plen = -1          # the general path fails it
                    if not self.client:
                        hlen += 4
                    if 0 <= plen <= self.max_payload_length and avail >= hlen + plen:
                        if b0 == FIN | Opcode.BINARY:
                            message = PyBytes_FromStringAndSize(NULL, plen)
                            dst = PyBytes_AS_STRING(message)
                            if self.client:
                                memcpy(dst, data + pos + hlen, plen)
                            else:
                                harpia_mask(<unsigned char *>dst, data + pos + hlen, plen,
                                            data + pos + hlen - 4, 0)
                        else:
                            if self.client:
                                dst = <char *>(data + pos + hlen)
                            else:
                                if plen <= SMALL_TEXT:
                                    dst = small
                                else:
                                    dst = <char *>malloc(plen)
                                    if dst == NULL:
                                        raise MemoryError()
                                harpia_mask(<unsigned char *>dst, data + pos + hlen, plen,
                                            data + pos + hlen - 4, 0)
                            try:
                                message = PyUnicode_DecodeUTF8(dst, plen, NULL)
                            except UnicodeDecodeError:
                                pos += hlen + plen
                                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                                break
                            finally:
                                if dst != small and not self.client:
                                    free(dst)
                        pos += hlen + plen
                        self.read_frames += 1
                        self._deliver(message)
                        continue

            # General path: collect the header byte by byte state, then validate it.
            if self.hdr_have < 2:
                take = 2 - self.hdr_have
                if take > n - pos:
                    take = n - pos
                memcpy(&self.hdr[self.hdr_have], data + pos, take)
                self.hdr_have += take
                pos += take
                if self.hdr_have < 2:
                    break
                if self._check_first_two_bytes() < 0:
                    break
            take = self.hdr_need - self.hdr_have
            if take > n - pos:
                take = n - pos
            if take:
                memcpy(&self.hdr[self.hdr_have], data + pos, take)
                self.hdr_have += take
                pos += take
            if self.hdr_have == self.hdr_need:
                self._header_complete()
        used[0] = pos
        return 0

    @cython.final
    cdef int _check_first_two_bytes(self) except -2:
        """Validate what the first two header bytes say; -1 if the connection failed."""
        cdef uint8_t b0 = self.hdr[0], b1 = self.hdr[1]
        cdef int opcode = b0 & 0x0F
        cdef uint8_t rsv = b0 & 0x70
        cdef int len7 = b1 & 0x7F
        cdef bint masked = (b1 & 0x80) != 0
        if (3 <= opcode <= 7) or opcode >= 11:
            self._fail(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode}")
            return -1
        if rsv & ~self.rsv_allowed:
            self._fail(CloseCode.PROTOCOL_ERROR, "reserved bits set without a negotiated extension")
            return -1
        if rsv and (opcode == Opcode.CONTINUATION or opcode >= Opcode.CLOSE):
            # RSV1 (permessage-deflate) marks the first frame of a message only.
            self._fail(CloseCode.PROTOCOL_ERROR, "RSV1 set on a continuation or control frame")
            return -1
        if opcode >= Opcode.CLOSE:
            if not (b0 & 0x80):
                self._fail(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
                return -1
            if len7 > MAX_CONTROL_PAYLOAD:
                self._fail(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
                return -1
        elif opcode == Opcode.CONTINUATION:
            if self.msg_opcode == 0:
                self._fail(CloseCode.PROTOCOL_ERROR, "continuation frame without a message to continue")
                return -1
        elif self.msg_opcode != 0:
            self._fail(CloseCode.PROTOCOL_ERROR, "new data frame before the fragmented message ended")
            return -1
        if masked == self.client:
            self._fail(CloseCode.PROTOCOL_ERROR, "server frames must not be masked" if self.client
                       else "client frames must be masked")
            return -1
        self.hdr_need = 2 + length_field_size(len7) + (4 if masked else 0)
        return 0

    @cython.final
    cdef int _header_complete(self) except -1:
        cdef uint8_t b0 = self.hdr[0], b1 = self.hdr[1]
        cdef Py_ssize_t plen
        cdef int opcode = b0 & 0x0F
        cdef uint8_t len7 = b1 & 0x7F
        cdef uint64_t length = decode_length(self.hdr)
        cdef int pos = 2 + length_field_size(len7)
        if length >> 63:
            self._fail(CloseCode.PROTOCOL_ERROR, "64-bit payload length with the top bit set")
            return 0
        if not length_minimal(length, len7):
            self._fail(CloseCode.PROTOCOL_ERROR, "payload length not minimally encoded")
            return 0
        if b1 & 0x80:
            memcpy(self.frame_key, &self.hdr[pos], 4)
        self.frame_masked = (b1 & 0x80) != 0
        self.hdr_have = 0
        self.read_frames += 1
        self.frame_opcode = opcode
        self.frame_fin = (b0 & 0x80) != 0
        self.frame_rsv = b0 & 0x70
        self.frame_left = length
        self.frame_done = 0
        if opcode < Opcode.CLOSE:
            if self.compression is not None and (
                    (self.frame_rsv & RSV1) if opcode != Opcode.CONTINUATION else self.msg_compressed):
                # Compressed bytes are inflated as they arrive, never buffered: memory is
                # bounded by the inflated size (checked in _inflate).  The wire size gets a
                # bound too, with room for deflate's worst-case growth of stored data.
                if opcode != Opcode.CONTINUATION:
                    self.compression.begin_message()
                self.compression.wire_in += length
                plen = self.compression.inflated_limit(self.max_payload_length)
                if self.compression.wire_in > <uint64_t>plen + (<uint64_t>plen >> 3) + 1024:
                    self._fail(CloseCode.MESSAGE_TOO_BIG, f"message over the {plen}-byte limit")
                    return 0
            elif length > <uint64_t>self.max_payload_length or \
                    length + <uint64_t>self.msg.len > <uint64_t>self.max_payload_length:
                # The limit is decided here, from the header, before any payload is buffered.
                self._fail(CloseCode.MESSAGE_TOO_BIG,
                           f"message over the {self.max_payload_length}-byte limit")
                return 0
            if opcode != Opcode.CONTINUATION:
                self.msg_opcode = opcode
                self.msg_compressed = (self.frame_rsv & RSV1) != 0
                self.utf8_state = 0
        else:
            self.ctl_len = 0
        if length == 0:
            self._frame_complete()
        else:
            self.in_payload = True
        return 0

    @cython.final
    cdef Py_ssize_t _payload_chunk(self, const uint8_t *src, Py_ssize_t n) except -1:
        """Take payload bytes of the current frame; returns how many were taken (fewer than
        ``n`` only when inflating stopped for this loop turn)."""
        cdef uint8_t *dst
        if self.msg_compressed and self.frame_opcode < Opcode.CLOSE and self.compression is not None:
            # Inflated as it arrives, never buffered whole.
            n = self._inflate(src, n, self.frame_key if self.frame_masked else NULL,
                              <size_t>(self.frame_done & 3), False)
            self.frame_done += n
            return n
        if self.frame_opcode >= Opcode.CLOSE:
            dst = &self.ctl_buf[self.ctl_len]
            self.ctl_len += <int>n
        else:
            self._msg_reserve(n)
            dst = <uint8_t *>self.msg.data + self.msg.len
            self.msg.len += n
        if self.frame_masked:
            harpia_mask(dst, src, n, self.frame_key, <size_t>(self.frame_done & 3))
        else:
            memcpy(dst, src, n)
        self._payload_landed(dst, n)
        return n

    @cython.final
    cdef int _payload_direct(self, Py_ssize_t n) except -1:
        """``n`` payload bytes were read straight into the message (get_buffer)."""
        cdef uint8_t *dst = <uint8_t *>self.msg.data + self.msg.len
        self.msg.len += n
        if self.frame_masked:
            harpia_mask(dst, dst, n, self.frame_key, <size_t>(self.frame_done & 3))
        self._payload_landed(dst, n)
        self.frame_left -= n
        if self.frame_left == 0:
            self.in_payload = False
            self._frame_complete()
        return 0

    @cython.final
    cdef int _payload_landed(self, const uint8_t *dst, Py_ssize_t n) except -1:
        self.frame_done += n
        if self.msg_opcode == Opcode.TEXT and self.frame_opcode < Opcode.CLOSE and not self.msg_compressed:
            # Fail fast: an invalid byte closes the connection the moment it arrives.
            if harpia_utf8_feed(&self.utf8_state, dst, n) < 0:
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
        return 0

    @cython.final
    cdef int _frame_complete(self) except -1:
        cdef object message
        if self.input_closed:
            return 0
        if self.frame_opcode >= Opcode.CLOSE:
            return self._control_frame()
        if not self.frame_fin:
            return 0
        if self.msg_compressed and self.compression is not None:
            # An empty payload is an empty message: the tail alone would leave the inflater
            # inside a stored block's header.
            if not self.compression.inflater.ended and self.compression.wire_in:
                self._inflate(DEFLATE_TAIL, 4, NULL, 0, True)
                if self.input_closed:
                    return 0
            self.compression.end_message()
        if self.msg_opcode == Opcode.TEXT:
            if not harpia_utf8_complete(self.utf8_state):
                self._fail(CloseCode.INVALID_DATA, "text message ends inside a UTF-8 sequence")
                return 0
            message = PyUnicode_DecodeUTF8(self.msg.data, self.msg.len, NULL) \
                if self.msg.len else ""
        else:
            message = buffer_take_bytes(&self.msg)      # the message itself, no copy
        self._msg_reset()
        self._deliver(message)
        message_done(message)       # its storage serves the next one if nobody kept it
        return 0

    @cython.final
    cdef Py_ssize_t _inflate(self, const uint8_t *src, Py_ssize_t n, const uint8_t *key,
                             size_t phase, bint tail) except -1:
        # Returns the bytes taken.  The tail goes whatever the budget: it only flushes what
        # zlib holds (a few KiB at most).
        cdef Py_ssize_t before = self.msg.len, used = 0, budget = PY_SSIZE_T_MAX
        if self.loop is not None and not tail:
            budget = INFLATE_YIELD_AT - self.read_inflated
        cdef int status = self.compression.inflate_into(
            &self.msg, src, n, key, phase, self.max_payload_length,
            &self.utf8_state if self.msg_opcode == Opcode.TEXT else NULL, &budget, &used)
        self.read_inflated += self.msg.len - before
        if budget <= 0 or status == INFLATE_PAUSED:
            self.inflate_yielding = True
        if status != INFLATE_OK and status != INFLATE_PAUSED:
            self._fail(CloseCode.MESSAGE_TOO_BIG if status == INFLATE_TOO_BIG or
                       status == INFLATE_RATIO else CloseCode.INVALID_DATA,
                       self.compression.failure_reason(status, self.max_payload_length))
        return used

    @cython.final
    cdef int _control_frame(self) except -1:
        cdef bytes payload = PyBytes_FromStringAndSize(<char *>self.ctl_buf, self.ctl_len)
        cdef int code
        cdef str reason
        cdef uint32_t state = 0
        if self.frame_opcode == Opcode.PING:
            if self.ready_state == ReadyState.OPEN:
                self._send_under_limit(Opcode.PONG, self.ctl_buf, self.ctl_len, 0)
            self.ping_received(payload)
            return 0
        if self.frame_opcode == Opcode.PONG:
            self.pong_received(payload)
            return 0
        # Close.
        if self.ctl_len == 1:
            self._fail(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
            return 0
        if self.ctl_len == 0:
            code = CloseCode.NO_STATUS_RCVD
            reason = ""
        else:
            code = (self.ctl_buf[0] << 8) | self.ctl_buf[1]
            if not close_code_ok(code):
                self._fail(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
                return 0
            if harpia_utf8_feed(&state, &self.ctl_buf[2], self.ctl_len - 2) < 0 or \
                    not harpia_utf8_complete(state):
                self._fail(CloseCode.INVALID_DATA, "close reason is not UTF-8")
                return 0
            reason = PyUnicode_DecodeUTF8(<char *>&self.ctl_buf[2], self.ctl_len - 2, NULL)
        self.input_closed = True
        self.close_code_received = code
        self.close_reason_received = reason
        self._msg_reset()
        if self.ready_state == ReadyState.OPEN:
            # Echo the peer's code (RFC 6455 section 5.5.1); 1005 means "no code": send none.
            self._start_close(0 if code == CloseCode.NO_STATUS_RCVD else code, "")
        self.ready_state = ReadyState.CLOSED
        self.close_received(code, reason)
        return 0

    @cython.final
    cdef int _deliver(self, object message) except -1:
        global _handler_tick
        cdef object result
        cdef int64_t started = 0
        if self.ready_state != ReadyState.OPEN:
            return 0             # we are closing: the peer's late messages are not delivered
        self.messages_in += 1
        if self.on_message is None:
            self._event(("message", message))
            return 0
        if self.handler_timer is not None:
            # One call in HANDLER_SAMPLE across the process is timed: two clock reads and a
            # Python call on every message would cost more than the handler of an echo.
            _handler_tick += 1
            if (_handler_tick & (HANDLER_SAMPLE - 1)) == 0:
                started = monotonic_ns()
        try:
            if self.message_arity == 2:
                result = self.on_message(self, message)
            elif self.message_arity == 1:
                result = self.on_message(self)
            else:
                result = self.on_message()
            if self.message_async and self.start_async(result):
                self.delivery_paused = True
        except Exception as exc:
            self.handler_failed(exc)
        if started:
            self.handler_timer(monotonic_ns() - started)
        return 0

    @cython.final
    cdef int _msg_reserve(self, Py_ssize_t extra) except -1:
        # Memory follows the bytes that actually arrived (at most twice that), never the
        # length a header merely announced; when the message ends with this frame the
        # buffer is sized to it exactly, so the final bytes object needs no copy.
        cdef Py_ssize_t need = self.msg.len + extra
        cdef Py_ssize_t cap, end_of_frame
        if need <= self.msg.cap:
            return 0
        cap = self.msg.cap * 2 if self.msg.cap else 256
        if cap < 2 * need:
            cap = 2 * need
        end_of_frame = self.msg.len + <Py_ssize_t>self.frame_left
        if self.frame_fin and need <= end_of_frame < cap:
            cap = end_of_frame
        return buffer_resize(&self.msg, cap)

    @cython.final
    cdef void _msg_reset(self) noexcept:
        buffer_free(&self.msg)
        self.msg_opcode = 0

    cdef int _output_drained(self) except -1:
        # Delivery stopped while the output was over its limit: go on with the held input.
        if self.held:
            self._parse_held()
        return 0

    # ------------------------------------------------------------------ public API
    # (documented in _frames.pyi)

    def bind_message_handler(self, handler, int arity=2, bint is_async=False):
        """Deliver messages as ``handler(engine, message)`` (or fewer arguments, per ``arity``)."""
        if not 0 <= arity <= 2:
            raise ValueError("arity must be 0, 1 or 2")
        self.on_message = handler
        self.message_arity = arity
        self.message_async = is_async

    def enable_deflate(self, *, bint local_no_context_takeover=True,
                       bint remote_no_context_takeover=True, int local_max_window_bits=15,
                       int remote_max_window_bits=15, int compression_level=6,
                       int memory_level=8, Py_ssize_t compress_threshold=0,
                       Py_ssize_t max_inflated_length=-1, uint32_t max_compression_ratio=0):
        """Turn on permessage-deflate (RFC 7692) with the negotiated parameters."""
        compression = PerMessageDeflate(
            client=self.client, local_no_context_takeover=local_no_context_takeover,
            remote_no_context_takeover=remote_no_context_takeover,
            local_max_window_bits=local_max_window_bits,
            remote_max_window_bits=remote_max_window_bits,
            compression_level=compression_level, memory_level=memory_level,
            compress_threshold=compress_threshold, max_inflated_length=max_inflated_length,
            max_compression_ratio=max_compression_ratio)
        if self.msg_opcode != 0:
            raise ValueError("enable_deflate() in the middle of a message")
        if self.compression is not None:
            self.compression.release()
        self.compression = compression
        self.rsv_allowed |= RSV1

    @cython.final
    cdef void _drop_compression(self) noexcept:
        if self.compression is not None:
            self.compression.release()
            self.compression = None

    def detach(self):
        """The transport is gone: drop queued output and input, write nothing more."""
        self.output.discard()
        self.loop = None
        self.held = None
        self.held_size = 0
        self._msg_reset()
        self._drop_compression()
        self.input_closed = True
        self.ready_state = ReadyState.CLOSED

    @property
    def is_input_closed(self):
        return self.input_closed

    @property
    def held_bytes(self):
        return self.held_size
