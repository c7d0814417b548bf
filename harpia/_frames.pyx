# cython: language_level=3
"""harpia's frame engine: RFC 6455 framing, sans-I/O.

Bytes go in through ``feed`` (or ``data_received``); whole messages go to the bound
message handler (or to ``events_received()`` when none is bound); frames to send collect
in an output buffer that is handed to ``writer`` once per event-loop turn (auto-cork), or
taken with ``data_to_send()``.  Nothing here knows about sockets or asyncio: the asyncio
adapter (``harpia.connection``) subclasses ``FrameEngine`` and overrides the event hooks.

Read top to bottom: constants, the input side (``get_buffer``/``buffer_updated`` or
``feed`` -> ``_parse`` -> ``_header_complete`` -> ``_payload_chunk`` -> ``_frame_complete``),
the serializer and backpressure accounting (``_send_frame`` -> ``_append_frame`` ->
``flush``), the public methods.  Compiled into the same C module, in files of their own:
``Cork`` (_frames_cork.pxi), the single-frame tools (_frames_tools.pxi) and ``publish``
(_frames_publish.pxi).
"""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from harpia._deflate cimport Deflater, Inflater, PerMessageDeflate, trim_output


cdef extern from "_mask.h" nogil:
    void harpia_mask(unsigned char *dst, const unsigned char *src, size_t n,
                     const unsigned char *key, size_t phase)

cdef extern from "_utf8.h" nogil:
    int harpia_utf8_feed(uint32_t *state, const unsigned char *s, size_t n)
    int harpia_utf8_complete(uint32_t state)

cdef extern from "Python.h":
    # The message being reassembled is a bytes object we own alone and grow in place, so a
    # binary message is handed to the handler without a final copy.
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    char *PyByteArray_AS_STRING(object o)
    int PyBUF_WRITE
    char *_bytes_data "PyBytes_AS_STRING" (PyObject *o)
    PyObject *_bytes_new "PyBytes_FromStringAndSize" (const char *s, Py_ssize_t n)
    int _bytes_resize "_PyBytes_Resize" (PyObject **o, Py_ssize_t n)
    void _xdecref "Py_XDECREF" (PyObject *o)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_MONOTONIC

cdef extern from "sys/random.h" nogil:
    ssize_t getrandom(void *buf, size_t buflen, unsigned int flags)


# Ready states, as in the browser API and Bun.
CONNECTING = 0
OPEN = 1
CLOSING = 2
CLOSED = 3
DEF _OPEN = 1
DEF _CLOSING = 2
DEF _CLOSED = 3

DEF OP_CONT = 0
DEF OP_TEXT = 1
DEF OP_BINARY = 2
DEF OP_CLOSE = 8
DEF OP_PING = 9
DEF OP_PONG = 10

DEF RSV1 = 0x40

# Appended to a compressed message before inflating its end (RFC 7692 section 7.2.2).
cdef const uint8_t *DEFLATE_TAIL = <const uint8_t *>b"\x00\x00\xff\xff"
# How many engines have permessage-deflate on: while none has, a publish takes the plain
# path and never looks at a subscriber's compression.
cdef Py_ssize_t _deflate_engines = 0

# Why these sizes: a frame queued this turn is copied once into the output buffer; past
# CORK_FLUSH_AT the buffer goes to the transport at once so the kernel absorbs what it can
# (a handler sending in a loop is not capped at one turn's worth).  Buffers over KEEP_BUFFER
# are freed after use, so a connection that once moved a large message holds nothing
# while idle.
DEF CORK_FLUSH_AT = 65536
DEF DIRECT_WRITE_AT = 65536
DEF KEEP_BUFFER = 4096
DEF SMALL_TEXT = 512
# Reads go to the cork's shared area (RECV_AREA bytes, as uvloop's own read buffer) unless
# a data frame has DIRECT_READ_AT bytes or more still to come: then straight into the
# message.  RECV_SPARE: the area of an engine without a cork (a custom transport).
DEF RECV_AREA = 262144
DEF RECV_SPARE = 65536
DEF DIRECT_READ_AT = 65536
DEF DIRECT_GROW_AT = 16384

# Why two reasons: reading pauses while the outgoing buffer is over its limit AND while
# inbound bytes are held behind an async handler; either alone must keep it paused.
DEF PAUSE_OUTBOUND = 1
DEF PAUSE_INBOUND = 2
# Why a third: libuv (uvloop) reads a socket that stays full up to 32 times (256,000 bytes
# each) in one loop pass, where asyncio's selector loop reads it once.  After a read that
# carried YIELD_AFTER_FRAMES frames or more, reading stops until the next loop turn: a client
# streaming tiny frames gets about one read's worth of handler calls per pass on either loop
# and cannot starve the others, while bulk reads (few frames each) are not interrupted.
DEF PAUSE_YIELD = 4
DEF YIELD_AFTER_FRAMES = 1024
# The same for permessage-deflate, counted in bytes inflated rather than frames: a 16 KB
# frame can inflate to 16 MiB (~15 ms of CPU), so a read is parsed only up to the frame
# that takes it past INFLATE_YIELD_AT; the rest waits for the next loop turn.  Each
# connection then costs the others at most that, plus one message, per pass.
DEF INFLATE_YIELD_AT = 1048576


cdef uint32_t _clock = 0
# Counts message handler calls of engines with a handler_timer (see _deliver).
cdef uint64_t _handler_tick = 0
# One message handler call in this many is timed when an engine has a handler_timer.
DEF HANDLER_SAMPLE = 64

def set_clock(uint32_t seconds):
    """Set the coarse clock that ``last_seen`` is stamped with (the idle sweeper calls it)."""
    global _clock
    _clock = seconds


cdef inline bint _close_code_ok(int code) noexcept:
    # RFC 6455 section 7.4 and the IANA registry: 1004-1006 and 1015 never go on the wire,
    # 1016-2999 are reserved for future RFCs, 3000-4999 belong to libraries and apps.
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code <= 4999)


def is_valid_close_code(int code):
    """True if ``code`` may be sent or received in a close frame."""
    return _close_code_ok(code)


cdef uint8_t _random_pool[256]
cdef int _random_left = 0

cdef inline void _random_key(uint8_t *key) except *:
    # Client frames need an unpredictable mask (RFC 6455 section 10.3); one getrandom call
    # serves 64 frames.
    global _random_left
    if _random_left < 4:
        if getrandom(_random_pool, 256, 0) != 256:
            raise OSError("getrandom failed")
        _random_left = 256
    _random_left -= 4
    memcpy(key, &_random_pool[_random_left], 4)


cdef inline Py_ssize_t _header_size(Py_ssize_t n, bint masked) noexcept:
    cdef Py_ssize_t size = 2
    if n > 65535:
        size = 10
    elif n > 125:
        size = 4
    return size + 4 if masked else size


cdef inline Py_ssize_t _write_header(uint8_t *out, uint8_t first_byte, Py_ssize_t n,
                                     const uint8_t *key) noexcept:
    cdef uint8_t mask_bit = 0x80 if key != NULL else 0
    cdef Py_ssize_t pos
    cdef int i
    out[0] = first_byte
    if n <= 125:
        out[1] = mask_bit | <uint8_t>n
        pos = 2
    elif n <= 65535:
        out[1] = mask_bit | 126
        out[2] = <uint8_t>(n >> 8)
        out[3] = <uint8_t>n
        pos = 4
    else:
        out[1] = mask_bit | 127
        for i in range(8):
            out[2 + i] = <uint8_t>((<uint64_t>n) >> (56 - 8 * i))
        pos = 10
    if key != NULL:
        memcpy(out + pos, key, 4)
        pos += 4
    return pos


cdef class FrameEngine:
    """One WebSocket connection's protocol state: parser, serializer, output buffer.

    ``client=False`` is the server role (incoming frames must be masked, outgoing are not);
    ``client=True`` the reverse.  Limits are checked when a frame header arrives, before any
    payload is buffered.
    """

    def __cinit__(self):
        self.msg_obj = NULL
        self.out_buf = NULL
        self.events = None
        self.held = None
        self.close_reason_received = ""
        self.close_reason_sent = ""

    def __init__(self, *, bint client=False, Py_ssize_t max_payload_length=16 * 1024 * 1024,
                 Py_ssize_t backpressure_limit=1024 * 1024,
                 bint close_on_backpressure_limit=False,
                 Py_ssize_t inbound_limit=64 * 1024):
        if max_payload_length < 0 or backpressure_limit < 0 or inbound_limit < 0:
            raise ValueError("limits must not be negative")
        self.client = client
        self.max_payload_length = max_payload_length
        self.backpressure_limit = backpressure_limit
        self.close_on_backpressure_limit = close_on_backpressure_limit
        self.inbound_limit = inbound_limit
        self.ready_state = _OPEN
        self.last_seen = _clock

    def __dealloc__(self):
        self._drop_compression()
        _xdecref(self.msg_obj)
        free(self.out_buf)

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

    def drained(self):
        self._event(("drain",))

    def set_reading(self, bint reading):
        pass

    def closing_started(self):
        pass

    cdef int _event(self, tuple event) except -1:
        if self.events is None:
            self.events = []
        self.events.append(event)
        return 0

    # ------------------------------------------------------------------ input

    def feed(self, data):
        """Parse ``data`` (bytes-like); deliver every complete message, then flush."""
        self._feed(data)

    def data_received(self, data):
        self._feed(data)

    # The transport's other way in (asyncio.BufferedProtocol): it reads straight into the
    # area get_buffer() returns, then says how much landed.  Usually that area is the
    # cork's, shared by the loop's connections (reads never interleave), so a read costs
    # no allocation; in the middle of a large frame it is the message itself, so the
    # payload goes from the kernel to the message's bytes with no copy in between and is
    # unmasked in place.
    def get_buffer(self, Py_ssize_t sizehint):
        cdef Py_ssize_t window = self._direct_window()
        if window:
            self.recv_direct = True
            return PyMemoryView_FromMemory(_bytes_data(self.msg_obj) + self.msg_len, window,
                                           PyBUF_WRITE)
        self.recv_direct = False
        if self.cork is not None:
            return self.cork.receive_area()
        if self.recv_spare is None:
            self.recv_spare = bytearray(RECV_SPARE)
        return self.recv_spare

    def buffer_updated(self, Py_ssize_t nbytes):
        if self.recv_direct:
            self.recv_direct = False
            self._read_begin(nbytes)
            self.in_feed = True
            self.read_frames = 0
            self.read_inflated = 0
            try:
                self._payload_direct(nbytes)
            finally:
                self.in_feed = False
            self._read_end()
        elif self.cork is not None and self.cork.recv_area is not None:
            self._feed_ptr(<const uint8_t *>PyByteArray_AS_STRING(self.cork.recv_area), nbytes,
                           None)
        else:
            self._feed_ptr(<const uint8_t *>PyByteArray_AS_STRING(self.recv_spare), nbytes, None)

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

    cdef int _feed_ptr(self, const uint8_t *data, Py_ssize_t n, object owner) except -1:
        """Parse ``n`` bytes; ``owner`` is the bytes object they live in, or None when the
        memory is only borrowed (then what must be held is copied)."""
        cdef Py_ssize_t used = 0
        self._read_begin(n)
        if self.input_closed:
            return 0
        if self._stopped():
            self._hold(owner if owner is not None else PyBytes_FromStringAndSize(<char *>data, n))
            return 0
        self.in_feed = True
        self.read_frames = 0
        self.read_inflated = 0
        try:
            self._parse(data, n, &used)
            if self._stopped() and used < n and not self.input_closed:
                self._hold(owner[used:] if owner is not None
                           else PyBytes_FromStringAndSize(<char *>data + used, n - used))
        finally:
            self.in_feed = False
        return self._read_end()

    cdef int _hold(self, bytes rest) except -1:
        if self.held is None:
            self.held = []
        self.held.append(rest)
        self.held_size += PyBytes_GET_SIZE(rest)
        if self.held_size > self.inbound_limit:
            self._pause_reading(PAUSE_INBOUND)
        return 0

    cdef int _read_begin(self, Py_ssize_t n) except -1:
        self.last_seen = _clock
        self.bytes_in += n
        if self.cork is not None and self.cork.poll_window_ns:
            self.cork.activity()
        return 0

    cdef int _read_end(self) except -1:
        if self.out_len:
            self.flush()
        if self.inflate_yielding and not (self.read_pause_reasons & PAUSE_YIELD):
            self._pause_reading(PAUSE_YIELD)
            self.cork.call_soon(self._end_yield)
            return 0
        if self.read_frames >= YIELD_AFTER_FRAMES and self.cork is not None \
                and not self.input_closed and not (self.read_pause_reasons & PAUSE_YIELD):
            self._pause_reading(PAUSE_YIELD)
            self.cork.call_soon(self._end_yield)
        return 0

    cdef Py_ssize_t _direct_window(self) except -1:
        """How many bytes the next read may put straight into the message (0: none).

        Only inside a plain data frame with DIRECT_READ_AT bytes or more still to come; the
        message grows to at most twice what arrived (or by DIRECT_READ_AT), never to the
        length the header announced: memory follows the bytes that came (as _msg_reserve)."""
        cdef Py_ssize_t left, room, cap
        if not self.in_payload or self.frame_opcode >= OP_CLOSE or self.msg_compressed \
                or self.input_closed or self._stopped() or self.frame_left < DIRECT_READ_AT:
            return 0
        left = <Py_ssize_t>self.frame_left
        room = self.msg_cap - self.msg_len
        # Grow only when little room is left, and then by at least DIRECT_READ_AT: a
        # client trickling a few bytes per read must not cost a realloc per read.
        if room < left and room < DIRECT_GROW_AT:
            cap = 2 * self.msg_len
            if cap < self.msg_len + DIRECT_READ_AT:
                cap = self.msg_len + DIRECT_READ_AT
            if cap > self.msg_len + left:
                cap = self.msg_len + left
            self._msg_resize(cap)
            room = self.msg_cap - self.msg_len
        return room if room < left else left

    def _end_yield(self):
        if self.inflate_yielding:
            # Parse what was held back, with a fresh budget; stop again if it runs out.
            self.inflate_yielding = False
            self.read_inflated = 0
            self._parse_held()
            if self.inflate_yielding and not self.input_closed:
                self.cork.call_soon(self._end_yield)
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

    cdef bint _stopped(self) noexcept:
        # Delivery stops while an async handler runs, and while the output is over its
        # limit: a request/response handler must not see its replies dropped because the
        # client reads slowly, so its next requests wait (and reading pauses).
        return self.delivery_paused or self.awaiting_drain or self.inflate_yielding

    cdef int _parse_held(self) except -1:
        """Parse the bytes held while delivery was stopped, until it stops again."""
        cdef bytes chunk
        cdef Py_ssize_t used
        if self.in_feed or self._stopped():
            return 0
        self.in_feed = True
        try:
            while self.held and not self._stopped() and not self.input_closed:
                chunk = self.held.pop(0)
                self.held_size -= PyBytes_GET_SIZE(chunk)
                used = 0
                self._parse(<const uint8_t *>PyBytes_AS_STRING(chunk), PyBytes_GET_SIZE(chunk),
                            &used)
                if self._stopped() and used < PyBytes_GET_SIZE(chunk) and not self.input_closed:
                    self.held.insert(0, chunk[used:])
                    self.held_size += PyBytes_GET_SIZE(chunk) - used
        finally:
            self.in_feed = False
        if self.input_closed and self.held:
            self.held = None
            self.held_size = 0
        if self.held_size <= self.inbound_limit // 2:
            self._resume_reading(PAUSE_INBOUND)
        if self.out_len:
            self.flush()
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        """Fail the connection (RFC 6455 section 7.1.7): send a close frame, read no more."""
        self.input_closed = True
        self._msg_reset()
        if self.held is not None:
            self.held = None
            self.held_size = 0
        if self.ready_state == _OPEN:
            self._start_close(code, reason)
        self.protocol_failed(code, reason)
        return 0

    cdef int _parse(self, const uint8_t *data, Py_ssize_t n, Py_ssize_t *used) except -1:
        cdef Py_ssize_t pos = 0, take, plen, hlen, avail
        cdef uint8_t b0, b1
        cdef object message
        cdef char small[SMALL_TEXT]
        cdef char *dst
        while pos < n:
            if self.input_closed or self._stopped():
                break
            if self.in_payload:
                take = n - pos
                if <uint64_t>take > self.frame_left:
                    take = <Py_ssize_t>self.frame_left
                self._payload_chunk(data + pos, take)
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
                if (b0 == 0x81 or b0 == 0x82) and ((b1 & 0x80) != 0) != self.client:
                    plen = b1 & 0x7F
                    hlen = 2
                    if plen == 126 and avail >= 4:
                        plen = (<Py_ssize_t>data[pos + 2] << 8) | data[pos + 3]
                        hlen = 4
                        if plen < 126:
                            plen = -1          # not minimal: the general path fails it
                    elif plen >= 126:
                        plen = -1
                    if not self.client:
                        hlen += 4
                    if 0 <= plen <= self.max_payload_length and avail >= hlen + plen:
                        if b0 == 0x82:
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
                                self._fail(1007, "invalid UTF-8 in a text message")
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
                if self._first_two_bytes() < 0:
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

    cdef int _first_two_bytes(self) except -2:
        """Validate what the first two header bytes say; -1 if the connection failed."""
        cdef uint8_t b0 = self.hdr[0], b1 = self.hdr[1]
        cdef int opcode = b0 & 0x0F
        cdef uint8_t rsv = b0 & 0x70
        cdef int len7 = b1 & 0x7F
        cdef bint masked = (b1 & 0x80) != 0
        if (3 <= opcode <= 7) or opcode >= 11:
            self._fail(1002, f"reserved opcode {opcode}")
            return -1
        if rsv & ~self.rsv_allowed:
            self._fail(1002, "reserved bits set without a negotiated extension")
            return -1
        if rsv and (opcode == OP_CONT or opcode >= OP_CLOSE):
            # RSV1 (permessage-deflate) marks the first frame of a message only.
            self._fail(1002, "RSV1 set on a continuation or control frame")
            return -1
        if opcode >= OP_CLOSE:
            if not (b0 & 0x80):
                self._fail(1002, "fragmented control frame")
                return -1
            if len7 > 125:
                self._fail(1002, "control frame payload over 125 bytes")
                return -1
        elif opcode == OP_CONT:
            if self.msg_opcode == 0:
                self._fail(1002, "continuation frame without a message to continue")
                return -1
        elif self.msg_opcode != 0:
            self._fail(1002, "new data frame before the fragmented message ended")
            return -1
        if masked == self.client:
            self._fail(1002, "server frames must not be masked" if self.client
                       else "client frames must be masked")
            return -1
        self.hdr_need = 2 + (2 if len7 == 126 else 8 if len7 == 127 else 0) + (4 if masked else 0)
        return 0

    cdef int _header_complete(self) except -1:
        cdef uint8_t b0 = self.hdr[0], b1 = self.hdr[1]
        cdef int opcode = b0 & 0x0F
        cdef uint64_t length = b1 & 0x7F
        cdef int pos = 2, i
        if length == 126:
            length = (<uint64_t>self.hdr[2] << 8) | self.hdr[3]
            pos = 4
            if length < 126:
                self._fail(1002, "payload length not minimally encoded")
                return 0
        elif length == 127:
            length = 0
            for i in range(8):
                length = (length << 8) | self.hdr[2 + i]
            pos = 10
            if length >> 63:
                self._fail(1002, "64-bit payload length with the top bit set")
                return 0
            if length < 65536:
                self._fail(1002, "payload length not minimally encoded")
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
        if opcode < OP_CLOSE:
            if self.compression is not None and (
                    (self.frame_rsv & RSV1) if opcode != OP_CONT else self.msg_compressed):
                # Compressed bytes are inflated as they arrive, never buffered: memory is
                # bounded by the inflated size (checked in _inflate).  The wire size gets a
                # bound too, with room for deflate's worst-case growth of stored data.
                if opcode != OP_CONT:
                    self.compression.begin_message()
                self.compression.wire_in += length
                if self.compression.wire_in > <uint64_t>self.max_payload_length + \
                        (<uint64_t>self.max_payload_length >> 3) + 1024:
                    self._fail(1009, f"message over the {self.max_payload_length}-byte limit")
                    return 0
            elif length > <uint64_t>self.max_payload_length or \
                    length + <uint64_t>self.msg_len > <uint64_t>self.max_payload_length:
                # The limit is decided here, from the header, before any payload is buffered.
                self._fail(1009, f"message over the {self.max_payload_length}-byte limit")
                return 0
            if opcode != OP_CONT:
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

    cdef int _payload_chunk(self, const uint8_t *src, Py_ssize_t n) except -1:
        cdef uint8_t *dst
        if self.msg_compressed and self.frame_opcode < OP_CLOSE and self.compression is not None:
            return self._compressed_chunk(src, n)
        if self.frame_opcode >= OP_CLOSE:
            dst = &self.ctl_buf[self.ctl_len]
            self.ctl_len += <int>n
        else:
            self._msg_reserve(n)
            dst = <uint8_t *>_bytes_data(self.msg_obj) + self.msg_len
            self.msg_len += n
        if self.frame_masked:
            harpia_mask(dst, src, n, self.frame_key, <size_t>(self.frame_done & 3))
        else:
            memcpy(dst, src, n)
        return self._payload_landed(dst, n)

    cdef int _payload_direct(self, Py_ssize_t n) except -1:
        """``n`` payload bytes were read straight into the message (get_buffer)."""
        cdef uint8_t *dst = <uint8_t *>_bytes_data(self.msg_obj) + self.msg_len
        self.msg_len += n
        if self.frame_masked:
            harpia_mask(dst, dst, n, self.frame_key, <size_t>(self.frame_done & 3))
        self._payload_landed(dst, n)
        self.frame_left -= n
        if self.frame_left == 0:
            self.in_payload = False
            self._frame_complete()
        return 0

    cdef int _payload_landed(self, const uint8_t *dst, Py_ssize_t n) except -1:
        self.frame_done += n
        if self.msg_opcode == OP_TEXT and self.frame_opcode < OP_CLOSE and not self.msg_compressed:
            # Fail fast: an invalid byte closes the connection the moment it arrives.
            if harpia_utf8_feed(&self.utf8_state, dst, n) < 0:
                self._fail(1007, "invalid UTF-8 in a text message")
        return 0

    cdef int _frame_complete(self) except -1:
        cdef object message
        if self.input_closed:
            return 0
        if self.frame_opcode >= OP_CLOSE:
            return self._control_frame()
        if not self.frame_fin:
            return 0
        if self.msg_compressed and self.compression is not None:
            # An empty payload is an empty message: the tail alone would leave the inflater
            # inside a stored block's header.
            if not self.compression.inflater.ended and self.compression.wire_in:
                self._inflate(DEFLATE_TAIL, 4)
                if self.input_closed:
                    return 0
            self.compression.end_message()
        if self.msg_opcode == OP_TEXT:
            if not harpia_utf8_complete(self.utf8_state):
                self._fail(1007, "text message ends inside a UTF-8 sequence")
                return 0
            if self.msg_obj == NULL:
                message = ""
            else:
                message = PyUnicode_DecodeUTF8(_bytes_data(self.msg_obj), self.msg_len, NULL)
        elif self.msg_obj == NULL:
            message = b""
        else:
            if self.msg_cap != self.msg_len:
                _bytes_resize(&self.msg_obj, self.msg_len)
            message = <object>self.msg_obj       # takes a reference; ours is dropped below
        self._msg_reset()
        self._deliver(message)
        return 0

    cdef int _compressed_chunk(self, const uint8_t *src, Py_ssize_t n) except -1:
        # Unmask into a small stack buffer, slice by slice, and inflate each slice: the
        # compressed bytes are never buffered whole.
        cdef uint8_t buf[16384]
        cdef Py_ssize_t off = 0, take
        if not self.frame_masked:
            self._inflate(src, n)
        else:
            while off < n and not self.input_closed:
                take = n - off if n - off < 16384 else 16384
                harpia_mask(buf, src + off, take, self.frame_key,
                            <size_t>((self.frame_done + off) & 3))
                self._inflate(buf, take)
                off += take
        self.frame_done += n
        return 0

    cdef int _inflate(self, const uint8_t *src, Py_ssize_t n) except -1:
        """Inflate into the message buffer, which grows with the output up to
        ``max_payload_length`` + 1 bytes: one byte more fails with 1009 at once, so a small
        frame that would inflate to gigabytes costs no more than the limit."""
        cdef Inflater inflater = self.compression.inflater
        cdef Py_ssize_t limit = self.max_payload_length + 1
        cdef Py_ssize_t room, cap, consumed, produced
        cdef uint8_t *dst
        cdef int rc
        while True:
            if self.msg_len == self.msg_cap:
                if self.msg_cap >= limit:
                    self._fail(1009, f"message over the {self.max_payload_length}-byte limit")
                    return 0
                cap = self.msg_cap * 2 if self.msg_cap else 4 * n
                if cap < 1024:
                    cap = 1024
                if cap > limit:
                    cap = limit
                if self.msg_obj == NULL:
                    self.msg_obj = _bytes_new(NULL, cap)
                    if self.msg_obj == NULL:
                        raise MemoryError()
                else:
                    _bytes_resize(&self.msg_obj, cap)
                self.msg_cap = cap
            room = self.msg_cap - self.msg_len
            dst = <uint8_t *>_bytes_data(self.msg_obj) + self.msg_len
            rc = inflater.inflate_some(src, n, dst, room, &consumed, &produced)
            if rc < 0:
                self._fail(1007, "invalid compressed data")
                return 0
            if produced:
                self.msg_len += produced
                self.read_inflated += produced
                if self.read_inflated >= INFLATE_YIELD_AT and self.cork is not None:
                    self.inflate_yielding = True
                if self.msg_len > self.max_payload_length:
                    self._fail(1009, f"message over the {self.max_payload_length}-byte limit")
                    return 0
                if self.msg_opcode == OP_TEXT and \
                        harpia_utf8_feed(&self.utf8_state, dst, produced) < 0:
                    self._fail(1007, "invalid UTF-8 in a text message")
                    return 0
            src += consumed
            n -= consumed
            if rc == 1:
                if n:
                    self._fail(1007, "data after the final deflate block")
                return 0
            if n == 0 and produced < room:
                return 0
            if consumed == 0 and produced == 0:
                self._fail(1007, "invalid compressed data")
                return 0

    cdef int _control_frame(self) except -1:
        cdef bytes payload = PyBytes_FromStringAndSize(<char *>self.ctl_buf, self.ctl_len)
        cdef int code
        cdef str reason
        cdef uint32_t state = 0
        if self.frame_opcode == OP_PING:
            if self.ready_state == _OPEN:
                self._send_frame(OP_PONG, self.ctl_buf, self.ctl_len, 0)
            self.ping_received(payload)
            return 0
        if self.frame_opcode == OP_PONG:
            self.pong_received(payload)
            return 0
        # Close.
        if self.ctl_len == 1:
            self._fail(1002, "close frame with a 1-byte payload")
            return 0
        if self.ctl_len == 0:
            code = 1005
            reason = ""
        else:
            code = (self.ctl_buf[0] << 8) | self.ctl_buf[1]
            if not _close_code_ok(code):
                self._fail(1002, f"invalid close code {code}")
                return 0
            if harpia_utf8_feed(&state, &self.ctl_buf[2], self.ctl_len - 2) < 0 or \
                    not harpia_utf8_complete(state):
                self._fail(1007, "close reason is not UTF-8")
                return 0
            reason = PyUnicode_DecodeUTF8(<char *>&self.ctl_buf[2], self.ctl_len - 2, NULL)
        self.input_closed = True
        self.close_code_received = code
        self.close_reason_received = reason
        self._msg_reset()
        if self.ready_state == _OPEN:
            # Echo the peer's code (RFC 6455 section 5.5.1); 1005 means "no code": send none.
            self._start_close(0 if code == 1005 else code, "")
        self.ready_state = _CLOSED
        self.close_received(code, reason)
        return 0

    cdef int _deliver(self, object message) except -1:
        global _handler_tick
        cdef object result
        cdef int64_t started = 0
        if self.ready_state != _OPEN:
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
                started = _monotonic_ns()
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
            self.handler_timer(_monotonic_ns() - started)
        return 0

    cdef int _msg_reserve(self, Py_ssize_t extra) except -1:
        # Memory follows the bytes that actually arrived (at most twice that), never the
        # length a header merely announced; when the message ends with this frame the
        # buffer is sized to it exactly, so the final bytes object needs no copy.
        cdef Py_ssize_t need = self.msg_len + extra
        cdef Py_ssize_t cap, end_of_frame
        if need <= self.msg_cap:
            return 0
        cap = self.msg_cap * 2 if self.msg_cap else 256
        if cap < 2 * need:
            cap = 2 * need
        end_of_frame = self.msg_len + <Py_ssize_t>self.frame_left
        if self.frame_fin and need <= end_of_frame < cap:
            cap = end_of_frame
        return self._msg_resize(cap)

    cdef int _msg_resize(self, Py_ssize_t cap) except -1:
        if self.msg_obj == NULL:
            self.msg_obj = _bytes_new(NULL, cap)
            if self.msg_obj == NULL:
                raise MemoryError()
        elif _bytes_resize(&self.msg_obj, cap) < 0:
            # _PyBytes_Resize has freed the message and set MemoryError.
            self.msg_obj = NULL
            self.msg_cap = self.msg_len = 0
            raise MemoryError()
        self.msg_cap = cap
        return 0

    cdef void _msg_reset(self) noexcept:
        _xdecref(self.msg_obj)
        self.msg_obj = NULL
        self.msg_cap = 0
        self.msg_len = 0
        self.msg_opcode = 0

    # ------------------------------------------------------------------ output

    cdef int _out_reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.out_len + extra
        cdef Py_ssize_t cap
        cdef char *buf
        if need <= self.out_cap:
            return 0
        cap = self.out_cap * 2 if self.out_cap else 1024
        if cap < need:
            cap = need
        buf = <char *>realloc(self.out_buf, cap)
        if buf == NULL:
            raise MemoryError()
        self.out_buf = buf
        self.out_cap = cap
        return 0

    cdef Py_ssize_t _append_frame(self, int opcode, const uint8_t *data, Py_ssize_t n,
                                  uint8_t first_byte_bits) except -1:
        """Serialize one frame into the output buffer; return its size on the wire."""
        cdef uint8_t key[4]
        cdef Py_ssize_t total = _header_size(n, self.client) + n
        cdef Py_ssize_t hlen
        cdef uint8_t *out
        self._out_reserve(total)
        out = <uint8_t *>self.out_buf + self.out_len
        if self.client:
            _random_key(key)
            hlen = _write_header(out, first_byte_bits | opcode, n, key)
            harpia_mask(out + hlen, data, n, key, 0)
        else:
            hlen = _write_header(out, first_byte_bits | opcode, n, NULL)
            memcpy(out + hlen, data, n)
        self.out_len += total
        return total

    cdef Py_ssize_t _send_frame(self, int opcode, const uint8_t *data, Py_ssize_t n,
                                uint8_t rsv) except -2:
        """Queue a frame under the backpressure contract: its size, -1 or 0."""
        cdef Py_ssize_t total
        if self.ready_state != _OPEN:
            self.dropped += 1
            return 0
        if self.out_len + self.transport_buffered > self.backpressure_limit:
            self.dropped += 1
            return 0
        total = self._append_frame(opcode, data, n, 0x80 | rsv)
        if opcode < OP_CLOSE:
            self.messages_out += 1
        return self._account(total)

    cdef Py_ssize_t _send_direct(self, int opcode, object payload, const uint8_t *data,
                                 Py_ssize_t n) except -2:
        """A large server frame goes straight to the transport: what is queued plus the
        header in one buffer, then the payload itself (a bytes object is not copied at all)."""
        cdef Py_ssize_t total = _header_size(n, False) + n
        cdef bytes head
        cdef char *p
        if self.ready_state != _OPEN or \
                self.out_len + self.transport_buffered > self.backpressure_limit:
            self.dropped += 1
            return 0
        if payload is not None:
            head = PyBytes_FromStringAndSize(NULL, self.out_len + total - n)
            p = PyBytes_AS_STRING(head)
            memcpy(p, self.out_buf, self.out_len)
            _write_header(<uint8_t *>p + self.out_len, 0x80 | opcode, n, NULL)
            self.out_len = 0
            if self.writelines is not None:
                self.writelines((head, payload))
            else:
                # Two writes rather than a copy: write() is what every loop's flow control
                # is sure to watch (asyncio 3.12.0-3.12.8 and 3.13.0-3.13.1 never pause
                # the protocol for writelines()).
                self.writer(head)
                self.writer(payload)
        else:
            head = PyBytes_FromStringAndSize(NULL, self.out_len + total)
            p = PyBytes_AS_STRING(head)
            memcpy(p, self.out_buf, self.out_len)
            _write_header(<uint8_t *>p + self.out_len, 0x80 | opcode, n, NULL)
            memcpy(p + self.out_len + total - n, data, n)
            self.out_len = 0
            self.writer(head)
        self.messages_out += 1
        self.bytes_out += total
        if self.buffer_size is not None:
            # Ask the transport what it holds now, rather than trusting that its
            # pause_writing came (and came with the final count): once per large message.
            self.transport_buffered = self.buffer_size()
        if self.out_len + self.transport_buffered > self.backpressure_limit:
            self.backpressure_events += 1
            self.awaiting_drain = True
            self._pause_reading(PAUSE_OUTBOUND)
            if self.close_on_backpressure_limit:
                self._start_close(1013, "backpressure limit exceeded")
            return -1
        return total

    cdef Py_ssize_t _queue_serialized(self, const char *frame, Py_ssize_t n) except -2:
        """Queue a frame serialized elsewhere (a publish: built once, copied to each)."""
        if self.ready_state != _OPEN:
            self.dropped += 1
            return 0
        if self.out_len + self.transport_buffered > self.backpressure_limit:
            self.dropped += 1
            return 0
        self._out_reserve(n)
        memcpy(self.out_buf + self.out_len, frame, n)
        self.out_len += n
        self.messages_out += 1
        return self._account(n)

    cdef Py_ssize_t _send_message(self, object message, object compress) except -2:
        """``send`` with permessage-deflate negotiated."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef Py_buffer view
        if PyUnicode_CheckExact(message) or isinstance(message, str):
            p = PyUnicode_AsUTF8AndSize(message, &n)
            return self._send_compressible(OP_TEXT, None, <const uint8_t *>p, n, compress)
        if PyBytes_CheckExact(message):
            return self._send_compressible(OP_BINARY, message,
                                           <const uint8_t *>PyBytes_AS_STRING(message),
                                           PyBytes_GET_SIZE(message), compress)
        try:
            PyObject_GetBuffer(message, &view, PyBUF_SIMPLE)
        except TypeError:
            raise TypeError(
                f"send() takes str or a bytes-like object, not {type(message).__name__}"
            ) from None
        try:
            return self._send_compressible(OP_BINARY, None, <const uint8_t *>view.buf,
                                           view.len, compress)
        finally:
            PyBuffer_Release(&view)

    cdef Py_ssize_t _send_compressible(self, int opcode, object payload, const uint8_t *data,
                                       Py_ssize_t n, object compress) except -2:
        """Send one message compressed (RSV1 on its only frame) when the settings and
        ``compress`` say so, else plain; returns as ``send``."""
        cdef PerMessageDeflate c = self.compression
        cdef const uint8_t *out
        cdef Py_ssize_t clen
        if c is None or not c.can_compress or compress is False or \
                (compress is None and n < c.compress_threshold):
            if n >= DIRECT_WRITE_AT and self._can_write_direct():
                return self._send_direct(opcode, payload, data, n)
            return self._send_frame(opcode, data, n, 0)
        # Decide about dropping before compressing: with a kept context, a message that
        # went through the compressor must reach the peer, or its inflater falls out of step.
        if self.ready_state != _OPEN or \
                self.out_len + self.transport_buffered > self.backpressure_limit:
            self.dropped += 1
            return 0
        out = c.get_deflater().compress(data, n, &clen)
        try:
            if clen >= n and c.local_no_context_takeover:
                # Nothing gained (random or tiny data): the plain message costs the peer less.
                if n >= DIRECT_WRITE_AT and self._can_write_direct():
                    return self._send_direct(opcode, payload, data, n)
                return self._send_frame(opcode, data, n, 0)
            if clen >= DIRECT_WRITE_AT and self._can_write_direct():
                # _send_direct ORs its opcode into the first byte: RSV1 rides along.
                return self._send_direct(RSV1 | opcode, None, out, clen)
            return self._send_frame(opcode, out, clen, RSV1)
        finally:
            trim_output()

    cdef bint _can_write_direct(self) noexcept:
        return not self.client and self.writer is not None and not self.writing_paused

    cdef Py_ssize_t _account(self, Py_ssize_t total) except -2:
        self.bytes_out += total
        if self.out_len >= CORK_FLUSH_AT and not self.writing_paused:
            self.flush()
        else:
            self._mark_dirty()
        if self.out_len + self.transport_buffered > self.backpressure_limit:
            self.backpressure_events += 1
            self.awaiting_drain = True
            self._pause_reading(PAUSE_OUTBOUND)
            if self.close_on_backpressure_limit:
                self._start_close(1013, "backpressure limit exceeded")
            return -1
        return total

    cdef int _mark_dirty(self) except -1:
        # Inside feed() the output is flushed when the read has been parsed; elsewhere the
        # cork writes it at the end of this loop turn, once, however many frames it holds.
        if not self.in_feed and not self.corked and self.cork is not None:
            self.corked = True
            self.cork.add(self)
        return 0

    cdef int flush(self) except -1:
        cdef bytes data
        if self.out_len == 0 or self.writing_paused or self.writer is None:
            return 0
        data = PyBytes_FromStringAndSize(self.out_buf, self.out_len)
        self.out_len = 0
        if self.out_cap > KEEP_BUFFER:
            free(self.out_buf)
            self.out_buf = NULL
            self.out_cap = 0
        self.writer(data)
        if self.awaiting_drain:
            self._check_drain()
        return 0

    cdef int _check_drain(self) except -1:
        # Hysteresis: drain fires once the buffer is back to a quarter of the limit, not on
        # every write that nibbles at it.
        if self.awaiting_drain and self.buffer_size is not None and not self.writing_paused:
            self.transport_buffered = self.buffer_size()
        if self.awaiting_drain and \
                self.out_len + self.transport_buffered <= self.backpressure_limit // 4:
            self.awaiting_drain = False
            self._resume_reading(PAUSE_OUTBOUND)
            if self.ready_state == _OPEN:
                self.drained()
            if self.held:
                self._parse_held()
        return 0

    cdef int _pause_reading(self, uint8_t reason) except -1:
        cdef uint8_t before = self.read_pause_reasons
        self.read_pause_reasons |= reason
        if before == 0:
            self.set_reading(False)
        return 0

    cdef int _resume_reading(self, uint8_t reason) except -1:
        if self.read_pause_reasons & reason:
            self.read_pause_reasons &= ~reason
            if self.read_pause_reasons == 0:
                self.set_reading(True)
        return 0

    cdef int _start_close(self, int code, str reason) except -1:
        """Queue our close frame (code 0: none) and enter CLOSING."""
        cdef uint8_t payload[125]
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
        self.close_code_sent = code if code else 1005
        self.close_reason_sent = reason
        self.ready_state = _CLOSING
        # The close frame bypasses the backpressure limit: it is one small frame, once.
        self._append_frame(OP_CLOSE, payload, n, 0x80)
        self._mark_dirty()
        self.closing_started()
        return 0

    # ------------------------------------------------------------------ public API

    def bind_message_handler(self, handler, int arity=2, bint is_async=False):
        """Deliver messages by calling ``handler`` directly: ``handler(engine, message)``
        (or fewer leading arguments, per ``arity``); ``None`` records them as events."""
        if not 0 <= arity <= 2:
            raise ValueError("arity must be 0, 1 or 2")
        self.on_message = handler
        self.message_arity = arity
        self.message_async = is_async

    def enable_rsv1(self):
        """Allow RSV1 on incoming data frames (permessage-deflate was negotiated)."""
        self.rsv_allowed |= RSV1

    def enable_deflate(self, *, bint local_no_context_takeover=True,
                       bint remote_no_context_takeover=True, int local_max_window_bits=15,
                       int remote_max_window_bits=15, int compression_level=6,
                       int memory_level=8, Py_ssize_t compress_threshold=0):
        """Turn on permessage-deflate (RFC 7692) with the negotiated parameters: messages
        with RSV1 are inflated, and sends are compressed (``local_*``: what we send)."""
        global _deflate_engines
        compression = PerMessageDeflate(
            client=self.client, local_no_context_takeover=local_no_context_takeover,
            remote_no_context_takeover=remote_no_context_takeover,
            local_max_window_bits=local_max_window_bits,
            remote_max_window_bits=remote_max_window_bits,
            compression_level=compression_level, memory_level=memory_level,
            compress_threshold=compress_threshold)
        if self.msg_opcode != 0:
            raise ValueError("enable_deflate() in the middle of a message")
        if not self.deflate_counted:
            self.deflate_counted = True
            _deflate_engines += 1
        if self.compression is not None:
            self.compression.release()
        self.compression = compression
        self.rsv_allowed |= RSV1

    cdef void _drop_compression(self) noexcept:
        global _deflate_engines
        if self.deflate_counted:
            self.deflate_counted = False
            _deflate_engines -= 1
        if self.compression is not None:
            self.compression.release()
            self.compression = None

    def attach(self, writer, Cork cork=None, writelines=None, buffer_size=None):
        """Hand output to ``writer(bytes)``, batched per loop turn by ``cork``;
        ``writelines`` (optional) lets large payloads go out without a copy;
        ``buffer_size()`` (optional) tells how much the transport still holds, so ``drain``
        waits for the bytes to really leave."""
        self.writer = writer
        self.writelines = writelines
        self.buffer_size = buffer_size
        self.cork = cork

    def detach(self):
        """The transport is gone: drop queued output, write nothing more."""
        self.writer = None
        self.writelines = None
        self.buffer_size = None
        self.cork = None
        self.out_len = 0
        free(self.out_buf)
        self.out_buf = NULL
        self.out_cap = 0
        self.held = None
        self.held_size = 0
        self._msg_reset()
        self._drop_compression()
        self.input_closed = True
        self.ready_state = _CLOSED

    def send(self, message, compress=None):
        """Send ``str`` as a text message, bytes-like as binary.

        Returns the bytes queued (> 0), ``-1`` if queued but the buffer went over
        ``backpressure_limit`` (wait for drain), or ``0`` if dropped (closing, closed, or
        already over the limit).

        ``compress`` matters only with permessage-deflate: ``None`` compresses messages of
        at least the route's ``compress_threshold`` bytes, ``True`` always, ``False`` never."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef Py_buffer view
        if self.compression is not None:
            return self._send_message(message, compress)
        if PyUnicode_CheckExact(message):
            p = PyUnicode_AsUTF8AndSize(message, &n)
            if n >= DIRECT_WRITE_AT and self._can_write_direct():
                return self._send_direct(OP_TEXT, None, <const uint8_t *>p, n)
            return self._send_frame(OP_TEXT, <const uint8_t *>p, n, 0)
        if PyBytes_CheckExact(message):
            n = PyBytes_GET_SIZE(message)
            if n >= DIRECT_WRITE_AT and self._can_write_direct():
                return self._send_direct(OP_BINARY, message,
                                         <const uint8_t *>PyBytes_AS_STRING(message), n)
            return self._send_frame(OP_BINARY, <const uint8_t *>PyBytes_AS_STRING(message),
                                    n, 0)
        if isinstance(message, str):
            p = PyUnicode_AsUTF8AndSize(message, &n)
            return self._send_frame(OP_TEXT, <const uint8_t *>p, n, 0)
        try:
            PyObject_GetBuffer(message, &view, PyBUF_SIMPLE)
        except TypeError:
            raise TypeError(
                f"send() takes str or a bytes-like object, not {type(message).__name__}"
            ) from None
        try:
            return self._send_frame(OP_BINARY, <const uint8_t *>view.buf, view.len, 0)
        finally:
            PyBuffer_Release(&view)

    def send_text(self, str message):
        cdef Py_ssize_t n
        cdef const char *p = PyUnicode_AsUTF8AndSize(message, &n)
        if self.compression is not None:
            return self._send_compressible(OP_TEXT, None, <const uint8_t *>p, n, None)
        return self._send_frame(OP_TEXT, <const uint8_t *>p, n, 0)

    def send_binary(self, message):
        # A Py_buffer, not a typed memoryview: acquiring one of those costs more than
        # queueing a small frame.
        cdef Py_buffer view
        if self.compression is not None and not isinstance(message, str):
            return self._send_message(message, None)
        if PyBytes_CheckExact(message):
            return self._send_frame(OP_BINARY, <const uint8_t *>PyBytes_AS_STRING(message),
                                    PyBytes_GET_SIZE(message), 0)
        PyObject_GetBuffer(message, &view, PyBUF_SIMPLE)
        try:
            return self._send_frame(OP_BINARY, <const uint8_t *>view.buf, view.len, 0)
        finally:
            PyBuffer_Release(&view)

    def send_frame(self, int opcode, const uint8_t[::1] payload, *, bint fin=True,
                   bint rsv1=False):
        """Queue one raw frame (fragments, control frames); for tests and extensions."""
        cdef const uint8_t *p = &payload[0] if payload.shape[0] else NULL
        if not 0 <= opcode <= 15:
            # Protocol rules are not checked (that is the point), but an opcode must fit its
            # four bits, or it would overwrite FIN and the RSV bits.
            raise ValueError(f"opcode must be 0 to 15, got {opcode}")
        if self.ready_state != _OPEN:
            self.dropped += 1
            return 0
        self._append_frame(opcode, p, payload.shape[0],
                           (0x80 if fin else 0) | (RSV1 if rsv1 else 0))
        self._mark_dirty()
        return payload.shape[0]

    def ping(self, data=b""):
        """Send a ping (payload up to 125 bytes); returns as ``send``."""
        cdef bytes payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        return self._send_frame(OP_PING, <const uint8_t *>PyBytes_AS_STRING(payload),
                                len(payload), 0)

    def pong(self, data=b""):
        """Send an unsolicited pong (payload up to 125 bytes)."""
        cdef bytes payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        return self._send_frame(OP_PONG, <const uint8_t *>PyBytes_AS_STRING(payload),
                                len(payload), 0)

    def close(self, int code=1000, str reason=""):
        """Start the closing handshake; a no-op once closing has started."""
        if not _close_code_ok(code):
            raise ValueError(f"close code {code} may not be sent (use 1000-1003, 1007-1014 "
                             f"or 3000-4999)")
        cdef Py_ssize_t rlen
        PyUnicode_AsUTF8AndSize(reason, &rlen)
        if rlen > 123:
            raise ValueError(f"a close reason is at most 123 bytes of UTF-8, got {rlen}")
        if self.ready_state != _OPEN:
            return
        self._start_close(code, reason)
        if self.in_feed:
            return
        self.flush()

    def data_to_send(self):
        """Take the bytes queued for the peer (sans-I/O use, when no writer is attached)."""
        cdef bytes data = PyBytes_FromStringAndSize(self.out_buf, self.out_len)
        self.out_len = 0
        if self.awaiting_drain:
            self._check_drain()
        return data

    def events_received(self):
        """Take the events recorded since the last call (sans-I/O use)."""
        cdef list events = self.events
        self.events = None
        return events if events is not None else []

    def flush_output(self):
        """Write what is queued now instead of at the end of the loop turn."""
        self.corked = False
        self.flush()

    def pause_output(self, Py_ssize_t transport_buffered):
        """The transport's buffer is full: keep frames here until ``resume_output``."""
        self.writing_paused = True
        self.transport_buffered = transport_buffered

    def resume_output(self, Py_ssize_t transport_buffered):
        """The transport drained to ``transport_buffered`` bytes: write what is held."""
        self.writing_paused = False
        self.transport_buffered = transport_buffered
        self.flush()
        self._check_drain()

    @property
    def buffered_amount(self):
        """Bytes queued and not yet accepted by the kernel (as far as the engine knows)."""
        return self.out_len + self.transport_buffered

    @property
    def reading_paused(self):
        return self.read_pause_reasons != 0

    @property
    def is_input_closed(self):
        return self.input_closed

    @property
    def held_bytes(self):
        return self.held_size


include "_frames_cork.pxi"
include "_frames_tools.pxi"
include "_frames_publish.pxi"
