# cython: language_level=3
"""permessage-deflate (RFC 7692) for the frame engine: zlib's C API, raw deflate.

The engine calls these with C calls; nothing here knows about frames or sockets.

Memory is what makes deflate expensive for a server, so state is created late and shared
where the RFC allows it:

- A sender that resets its context after every message (``server_no_context_takeover``,
  harpia's default) needs no compressor of its own: every connection with the same
  window, level and memory level uses one process-wide ``Deflater``.  That is also what
  lets a publish compress a message once for all of those subscribers.
- A peer that resets its context (``client_no_context_takeover``, the default) needs an
  inflater only while one of its messages is arriving: it is borrowed from a small pool
  and given back at the end of the message.
- Only a peer that keeps its context gets an inflater of its own, created on its first
  compressed message, with the negotiated window (``client_max_window_bits``).

Output of ``Deflater.compress`` goes to one module-level buffer, reused by every call
(the engine copies it into a frame right away); past ``KEEP_OUTPUT`` it is freed after use.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from harpia._buffer cimport ByteBuffer, buffer_reserve, buffer_resize, buffer_trim

cdef extern from "_utf8.h" nogil:
    int harpia_utf8_feed(uint32_t *state, const unsigned char *s, size_t n)

cdef extern from "_mask.h" nogil:
    void harpia_mask(unsigned char *dst, const unsigned char *src, size_t n,
                     const unsigned char *key, size_t phase)

cdef enum:
    # zlib's return codes, flush modes and the method/strategy harpia uses (zlib.h).
    Z_OK = 0
    Z_STREAM_END = 1
    Z_NEED_DICT = 2
    Z_STREAM_ERROR = -2
    Z_DATA_ERROR = -3
    Z_MEM_ERROR = -4
    Z_BUF_ERROR = -5
    Z_NO_FLUSH = 0
    Z_SYNC_FLUSH = 2
    Z_DEFLATED = 8
    Z_DEFAULT_STRATEGY = 0
    # zlib counts in 32-bit unsigned ints: larger inputs go through in slices.
    SLICE = 1 << 30
    # The compressed-output buffer is kept between calls up to this size (a typical message).
    KEEP_OUTPUT = 65536
    # Free inflaters kept for peers that reset their context; each holds ~7 KiB of zlib
    # state plus a 32 KiB window once used, so the pool costs at most ~320 KiB per process.
    POOL_SIZE = 8
    # A message is inflated at most this much per zlib call, so the ratio and the caller's
    # budget are checked every 256 KiB of output (~0.2 ms), not once per frame.
    INFLATE_STEP = 262144
    # max_compression_ratio applies past this many inflated bytes: a small message may be
    # as repetitive as it likes (1 MiB of zeros deflates ~1000:1), a large one may not.
    RATIO_FLOOR = 1048576


def zlib_version():
    """The version of the zlib harpia runs with."""
    return zlibVersion().decode()


# Every Deflater compresses into this one buffer (messages are compressed one at a time).
cdef ByteBuffer _output
active_count = 0


cdef void trim_output() noexcept:
    """Free the shared output buffer if a large message grew it."""
    buffer_trim(&_output, KEEP_OUTPUT)


cdef int _check_init(int rc, str call) except -1:
    if rc == Z_MEM_ERROR:
        raise MemoryError()
    if rc != Z_OK:
        raise RuntimeError(f"{call} failed ({rc})")
    return 0


cdef class Deflater:
    """A raw-deflate compressor.  ``no_context_takeover``: reset before every message."""

    def __cinit__(self):
        memset(&self.strm, 0, sizeof(z_stream))

    def __init__(self, int window_bits=15, int level=6, int memory_level=8,
                 bint no_context_takeover=True):
        # zlib refuses a 256-byte window for raw deflate (windowBits 8), so 9 is the minimum.
        if not 9 <= window_bits <= 15:
            raise ValueError("window_bits must be 9-15")
        if not 0 <= level <= 9:
            raise ValueError("level must be 0-9")
        if not 1 <= memory_level <= 9:
            raise ValueError("memory_level must be 1-9")
        self.window_bits = window_bits
        self.level = level
        self.memory_level = memory_level
        self.no_context_takeover = no_context_takeover

    def __dealloc__(self):
        self.free_state()

    cdef int _init(self) except -1:
        _check_init(deflateInit2(&self.strm, self.level, Z_DEFLATED, -self.window_bits,
                                 self.memory_level, Z_DEFAULT_STRATEGY), "deflateInit2")
        self.initialized = True
        self.dirty = False
        return 0

    cdef void free_state(self) noexcept:
        if self.initialized:
            deflateEnd(&self.strm)
            memset(&self.strm, 0, sizeof(z_stream))
            self.initialized = False

    cdef const uint8_t *compress(self, const uint8_t *data, Py_ssize_t n,
                                 Py_ssize_t *out_len) except NULL:
        """Compress one whole message; its deflate blocks end with a sync flush whose
        0x00 0x00 0xff 0xff tail is removed (RFC 7692 section 7.2.1).  The result lives in
        the shared output buffer until the next call."""
        cdef Py_ssize_t produced = 0, left = n, take
        cdef int rc, flush
        if n == 0:
            # An empty stored block, its tail removed (RFC 7692 section 7.2.3.6).  zlib
            # would write nothing at all for a second flush without input in between.
            buffer_reserve(&_output, 64)
            _output.data[0] = 0
            out_len[0] = 1
            return <const uint8_t *>_output.data
        if not self.initialized:
            self._init()
        elif self.no_context_takeover and self.dirty:
            deflateReset(&self.strm)
        self.dirty = True
        buffer_reserve(&_output, <Py_ssize_t>deflateBound(&self.strm, <unsigned long>n) + 64)
        self.strm.next_in = data
        while True:
            take = left if left < SLICE else SLICE
            left -= take
            self.strm.avail_in = <unsigned int>take
            flush = Z_SYNC_FLUSH if left == 0 else Z_NO_FLUSH
            while True:
                if produced == _output.cap:
                    _output.len = produced
                    buffer_reserve(&_output, _output.cap)
                    _output.len = 0
                self.strm.next_out = <uint8_t *>_output.data + produced
                self.strm.avail_out = <unsigned int>(
                    _output.cap - produced if _output.cap - produced < SLICE else SLICE)
                rc = deflate(&self.strm, flush)
                produced = self.strm.next_out - <uint8_t *>_output.data
                if rc == Z_STREAM_ERROR:
                    # The stream is unusable; the next message starts a fresh one.
                    self.free_state()
                    raise RuntimeError("deflate failed")
                if self.strm.avail_in == 0 and self.strm.avail_out != 0:
                    break
            if left == 0:
                break
        self.strm.next_in = NULL
        self.strm.next_out = NULL
        out_len[0] = produced - 4 if produced >= 4 else produced
        return <const uint8_t *>_output.data

    def compress_message(self, data):
        """Compress ``data`` (bytes-like) as one message's payload; for tests and tools."""
        cdef const uint8_t[::1] view = data
        cdef Py_ssize_t n
        cdef const uint8_t *p = self.compress(&view[0] if view.shape[0] else <const uint8_t *>"",
                                              view.shape[0], &n)
        result = PyBytes_FromStringAndSize(<const char *>p, n)
        trim_output()
        return result


cdef dict _shared_deflaters = {}


cdef Deflater _shared_deflater(int window_bits, int level, int memory_level):
    cdef tuple key = (window_bits, level, memory_level)
    cdef Deflater deflater = _shared_deflaters.get(key)
    if deflater is None:
        deflater = Deflater(window_bits, level, memory_level, True)
        _shared_deflaters[key] = deflater
    return deflater


cdef class Inflater:
    """A raw-deflate decompressor with a window of ``2**window_bits`` bytes."""

    def __cinit__(self):
        memset(&self.strm, 0, sizeof(z_stream))

    def __init__(self, int window_bits=15):
        if not 8 <= window_bits <= 15:
            raise ValueError("window_bits must be 8-15")
        self.window_bits = window_bits

    def __dealloc__(self):
        self.free_state()

    cdef int _init(self) except -1:
        _check_init(inflateInit2(&self.strm, -self.window_bits), "inflateInit2")
        self.initialized = True
        self.ended = False
        return 0

    cdef void free_state(self) noexcept:
        if self.initialized:
            inflateEnd(&self.strm)
            memset(&self.strm, 0, sizeof(z_stream))
            self.initialized = False
        self.ended = False

    cdef int inflate_some(self, const uint8_t *src, Py_ssize_t n, uint8_t *dst, Py_ssize_t room,
                          Py_ssize_t *consumed, Py_ssize_t *produced) except -2:
        """Inflate from ``src`` into at most ``room`` bytes at ``dst``.  Returns 0 (more
        may follow), 1 (the deflate stream ended: a final block), -1 (corrupt data)."""
        cdef int rc
        consumed[0] = 0
        produced[0] = 0
        if not self.initialized:
            self._init()
        if self.ended:
            return -1 if n else 1
        self.strm.next_in = src
        self.strm.avail_in = <unsigned int>(n if n < SLICE else SLICE)
        self.strm.next_out = dst
        self.strm.avail_out = <unsigned int>(room if room < SLICE else SLICE)
        rc = inflate(&self.strm, Z_SYNC_FLUSH)
        consumed[0] = self.strm.next_in - src
        produced[0] = self.strm.next_out - dst
        self.strm.next_in = NULL
        self.strm.next_out = NULL
        if rc == Z_OK or rc == Z_BUF_ERROR:
            return 0
        if rc == Z_STREAM_END:
            self.ended = True
            return 1
        if rc == Z_MEM_ERROR:
            raise MemoryError()
        return -1

    cdef int end_message(self, bint keep_context) except -1:
        """A message is complete: forget it, or keep its window for the next one."""
        cdef unsigned char *window
        cdef unsigned int size = 0
        if not self.initialized:
            return 0
        if not keep_context:
            inflateReset(&self.strm)
        elif self.ended:
            # The peer closed its deflate stream (a final block) but keeps its context:
            # start a new stream over the same window.
            window = <unsigned char *>malloc(1 << self.window_bits)
            if window == NULL:
                raise MemoryError()
            try:
                inflateGetDictionary(&self.strm, window, &size)
                inflateReset(&self.strm)
                if size:
                    inflateSetDictionary(&self.strm, window, size)
            finally:
                free(window)
        self.ended = False
        return 0


cdef list _inflater_pool = []


cdef class PerMessageDeflate:
    """permessage-deflate as negotiated for one connection.

    ``local_*`` describe what this side sends (the server's parameters in the server
    role), ``remote_*`` what the peer sends.  Messages shorter than ``compress_threshold``
    bytes are sent uncompressed unless a send forces compression.
    """

    def __init__(self, *, bint client=False, bint local_no_context_takeover=True,
                 bint remote_no_context_takeover=True, int local_max_window_bits=15,
                 int remote_max_window_bits=15, int compression_level=6, int memory_level=8,
                 Py_ssize_t compress_threshold=0, Py_ssize_t max_inflated_length=-1,
                 uint32_t max_compression_ratio=0):
        if not 8 <= local_max_window_bits <= 15 or not 8 <= remote_max_window_bits <= 15:
            raise ValueError("window bits must be 8-15")
        if not 0 <= compression_level <= 9:
            raise ValueError("compression_level must be 0-9")
        if not 1 <= memory_level <= 9:
            raise ValueError("memory_level must be 1-9")
        if compress_threshold < 0:
            raise ValueError("compress_threshold must not be negative")
        self.client = client
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.compression_level = compression_level
        self.memory_level = memory_level
        self.compress_threshold = compress_threshold
        self.max_inflated_length = max_inflated_length
        self.max_compression_ratio = max_compression_ratio
        self.can_compress = local_max_window_bits >= 9

    def __cinit__(self):
        global active_count
        active_count += 1

    def __dealloc__(self):
        global active_count
        active_count -= 1
        self.release()

    cdef Py_ssize_t inflated_limit(self, Py_ssize_t max_payload_length) noexcept:
        """The largest inflated message: ``max_inflated_length`` when set and lower."""
        if 0 <= self.max_inflated_length < max_payload_length:
            return self.max_inflated_length
        return max_payload_length

    cdef str failure_reason(self, int status, Py_ssize_t max_payload_length):
        """The close reason for what ``inflate_into`` said (1009 for the first two)."""
        if status == INFLATE_TOO_BIG:
            return f"message over the {self.inflated_limit(max_payload_length)}-byte limit"
        if status == INFLATE_RATIO:
            return (f"compression ratio over {self.max_compression_ratio}:1 "
                    f"(past {RATIO_FLOOR} bytes)")
        return ("invalid UTF-8 in a text message" if status == INFLATE_BAD_UTF8 else
                "data after the final deflate block" if status == INFLATE_TRAILING else
                "invalid compressed data")

    cdef int inflate_into(self, ByteBuffer *msg, const uint8_t *src, Py_ssize_t n,
                          const uint8_t *key, size_t phase, Py_ssize_t max_length,
                          uint32_t *utf8_state, Py_ssize_t *budget, Py_ssize_t *used) except -1:
        """Inflate ``src[:n]`` (part of the message begun with ``begin_message``; masked
        with ``key`` from ``phase`` unless ``key`` is NULL) onto the end of ``msg``,
        validating it as UTF-8 with ``utf8_state`` unless that is NULL.  ``max_length``:
        the engine's message limit (``max_inflated_length`` applies if lower).

        At most ``budget[0]`` bytes are produced (it is decreased by what was): once it is
        spent, INFLATE_PAUSED, and ``used[0]`` says how many of the ``n`` bytes were taken;
        the caller passes the rest again later.  That is how one connection's bombs wait
        for the next loop turn instead of holding the loop for a whole message.

        Masked bytes are unmasked into a small stack buffer, slice by slice, and each slice
        inflated: the compressed bytes are never buffered whole."""
        cdef uint8_t buf[16384]
        cdef Py_ssize_t off = 0, take, done = 0
        cdef int status = INFLATE_OK
        max_length = self.inflated_limit(max_length)
        if key == NULL:
            status = self._inflate_plain(msg, src, n, max_length, utf8_state, budget, used)
            return status
        while off < n and status == INFLATE_OK:
            take = n - off if n - off < 16384 else 16384
            harpia_mask(buf, src + off, take, key, (phase + <size_t>off) & 3)
            status = self._inflate_plain(msg, buf, take, max_length, utf8_state, budget, &done)
            off += done
        used[0] = off
        return status

    cdef int _inflate_plain(self, ByteBuffer *msg, const uint8_t *src, Py_ssize_t n,
                            Py_ssize_t max_length, uint32_t *utf8_state, Py_ssize_t *budget,
                            Py_ssize_t *used) except -1:
        """``inflate_into`` for unmasked bytes.  ``msg`` grows with the output up to
        ``max_length`` + 1 bytes: one byte more is INFLATE_TOO_BIG at once, so a small frame
        that would inflate to gigabytes costs no more than the limit."""
        cdef Inflater inflater = self.inflater
        cdef Py_ssize_t limit = max_length + 1, given = n
        cdef Py_ssize_t room, cap, consumed, produced
        cdef uint64_t ratio = self.max_compression_ratio
        cdef uint8_t *dst
        cdef int rc
        used[0] = 0
        while True:
            if budget[0] <= 0:
                return INFLATE_PAUSED
            if msg.len == msg.cap:
                if msg.cap >= limit:
                    return INFLATE_TOO_BIG
                cap = msg.cap * 2 if msg.cap else 4 * n
                if cap < 1024:
                    cap = 1024
                if cap > limit:
                    cap = limit
                buffer_resize(msg, cap)
            room = msg.cap - msg.len
            if room > INFLATE_STEP:
                room = INFLATE_STEP
            if room > budget[0]:
                room = budget[0]
            dst = <uint8_t *>msg.data + msg.len
            rc = inflater.inflate_some(src, n, dst, room, &consumed, &produced)
            if rc < 0:
                return INFLATE_BAD_DATA
            src += consumed
            n -= consumed
            used[0] = given - n
            self.compressed_in += <uint64_t>consumed
            if produced:
                msg.len += produced
                budget[0] -= produced
                if msg.len > max_length:
                    return INFLATE_TOO_BIG
                if utf8_state != NULL and harpia_utf8_feed(utf8_state, dst, produced) < 0:
                    return INFLATE_BAD_UTF8
                if ratio and msg.len > RATIO_FLOOR and \
                        <uint64_t>msg.len > ratio * self.compressed_in:
                    return INFLATE_RATIO
            if rc == 1:
                return INFLATE_TRAILING if n else INFLATE_OK
            if n == 0 and produced < room:
                return INFLATE_OK
            if consumed == 0 and produced == 0:
                return INFLATE_BAD_DATA

    cdef Deflater get_deflater(self):
        if self.deflater is None:
            if self.local_no_context_takeover:
                self.deflater = _shared_deflater(self.local_max_window_bits,
                                                 self.compression_level, self.memory_level)
            else:
                self.deflater = Deflater(self.local_max_window_bits, self.compression_level,
                                         self.memory_level, False)
        return self.deflater

    cdef Inflater begin_message(self):
        self.wire_in = 0
        self.compressed_in = 0
        if self.inflater is None:
            if self.remote_no_context_takeover:
                self.inflater = _inflater_pool.pop() if _inflater_pool else Inflater(15)
                self.inflater_borrowed = True
            else:
                # A compliant 256-byte-window peer is decoded by a 512-byte window just as
                # well, and zlib-based peers that cannot make 8 send with 9.
                self.inflater = Inflater(max(9, self.remote_max_window_bits))
        return self.inflater

    cdef int end_message(self) except -1:
        cdef Inflater inflater = self.inflater
        if inflater is None:
            return 0
        if self.inflater_borrowed:
            self.inflater = None
            self.inflater_borrowed = False
            inflater.end_message(False)
            if len(_inflater_pool) < POOL_SIZE:
                _inflater_pool.append(inflater)
        else:
            inflater.end_message(not self.remote_no_context_takeover)
        return 0

    cdef void release(self) noexcept:
        """The connection is gone: free what is ours (shared state stays shared)."""
        if self.inflater is not None:
            self.inflater.free_state()
            self.inflater = None
            self.inflater_borrowed = False
        if self.deflater is not None:
            if not self.local_no_context_takeover:
                self.deflater.free_state()
            self.deflater = None

    @property
    def has_inflater(self):
        """True while this connection holds a decompressor (for tests and memory checks)."""
        return self.inflater is not None

    @property
    def has_own_deflater(self):
        """True if this connection has a compressor of its own (it keeps its context)."""
        return self.deflater is not None and not self.local_no_context_takeover

    def __repr__(self):
        return (f"<PerMessageDeflate local(no_context_takeover={self.local_no_context_takeover},"
                f" max_window_bits={self.local_max_window_bits}) remote(no_context_takeover="
                f"{self.remote_no_context_takeover}, max_window_bits="
                f"{self.remote_max_window_bits}) level={self.compression_level}"
                f" threshold={self.compress_threshold}>")


def inflater_pool_size():
    """How many free inflaters the process keeps (for tests)."""
    return len(_inflater_pool)
