# The C surface of permessage-deflate (RFC 7692) for the frame engine.  Users see _deflate.pyi.
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from harpia._buffer cimport ByteBuffer


cdef extern from "zlib.h" nogil:
    ctypedef struct z_stream:
        const unsigned char *next_in
        unsigned int avail_in
        unsigned long total_in
        unsigned char *next_out
        unsigned int avail_out
        unsigned long total_out
        const char *msg
        void *zalloc
        void *zfree
        void *opaque
        int data_type
        unsigned long adler
    ctypedef z_stream *z_streamp

    const char *zlibVersion()
    int deflateInit2(z_streamp strm, int level, int method, int windowBits, int memLevel,
                     int strategy)
    int deflate(z_streamp strm, int flush)
    int deflateEnd(z_streamp strm)
    int deflateReset(z_streamp strm)
    unsigned long deflateBound(z_streamp strm, unsigned long sourceLen)
    int inflateInit2(z_streamp strm, int windowBits)
    int inflate(z_streamp strm, int flush)
    int inflateEnd(z_streamp strm)
    int inflateReset(z_streamp strm)
    int inflateGetDictionary(z_streamp strm, unsigned char *dictionary, unsigned int *dictLength)
    int inflateSetDictionary(z_streamp strm, const unsigned char *dictionary,
                             unsigned int dictLength)


cdef class Deflater:
    """One zlib compressor (raw deflate); shared by many connections when the sender
    resets its context after every message."""
    cdef z_stream strm
    cdef bint initialized
    cdef bint dirty
    cdef readonly int window_bits
    cdef readonly int level
    cdef readonly int memory_level
    cdef readonly bint no_context_takeover

    cdef int _init(self) except -1
    cdef const uint8_t *compress(self, const uint8_t *data, Py_ssize_t n,
                                 Py_ssize_t *out_len) except NULL
    cdef void free_state(self) noexcept


cdef class Inflater:
    """One zlib decompressor (raw deflate) with a window of ``2**window_bits`` bytes."""
    cdef z_stream strm
    cdef bint initialized
    cdef bint ended
    cdef readonly int window_bits

    cdef int _init(self) except -1
    cdef int inflate_some(self, const uint8_t *src, Py_ssize_t n, uint8_t *dst, Py_ssize_t room,
                          Py_ssize_t *consumed, Py_ssize_t *produced) except -2
    cdef int end_message(self, bint keep_context) except -1
    cdef void free_state(self) noexcept


cdef enum:
    # What inflate_into says about a message's compressed bytes.
    INFLATE_OK = 0
    INFLATE_TOO_BIG = 1            # it inflates past the message size limit
    INFLATE_BAD_DATA = 2           # not valid deflate data
    INFLATE_BAD_UTF8 = 3           # a text message that is not UTF-8
    INFLATE_TRAILING = 4           # bytes after the final deflate block
    INFLATE_PAUSED = 5             # the caller's budget is spent: call again with the rest
    INFLATE_RATIO = 6              # it inflates past max_compression_ratio x its compressed size


cdef class PerMessageDeflate:
    """The negotiated permessage-deflate of one connection (``local``: what we send)."""
    cdef readonly bint client
    cdef readonly bint local_no_context_takeover
    cdef readonly bint remote_no_context_takeover
    cdef readonly int local_max_window_bits
    cdef readonly int remote_max_window_bits
    cdef readonly int compression_level
    cdef readonly int memory_level
    cdef readonly Py_ssize_t compress_threshold
    # False when the peer asked for a 256-byte window, which zlib's raw deflate cannot
    # produce: everything is then sent uncompressed (always allowed by RFC 7692).
    cdef readonly bint can_compress
    cdef Deflater deflater
    cdef Inflater inflater
    cdef bint inflater_borrowed
    cdef public uint64_t wire_in
    # Compressed bytes of the message inflated so far (what the ratio is measured against).
    cdef uint64_t compressed_in
    # Limits on what the peer's compressed messages inflate to (-1, 0: none of its own).
    cdef readonly Py_ssize_t max_inflated_length
    cdef readonly uint32_t max_compression_ratio

    cdef Py_ssize_t inflated_limit(self, Py_ssize_t max_payload_length) noexcept
    cdef str failure_reason(self, int status, Py_ssize_t max_payload_length)
    cdef int inflate_into(self, ByteBuffer *msg, const uint8_t *src, Py_ssize_t n,
                          const uint8_t *key, size_t phase, Py_ssize_t max_length,
                          uint32_t *utf8_state, Py_ssize_t *budget, Py_ssize_t *used) except -1
    cdef int _inflate_plain(self, ByteBuffer *msg, const uint8_t *src, Py_ssize_t n,
                            Py_ssize_t max_length, uint32_t *utf8_state, Py_ssize_t *budget,
                            Py_ssize_t *used) except -1
    cdef Deflater get_deflater(self)
    cdef Inflater begin_message(self)
    cdef int end_message(self) except -1
    cdef void release(self) noexcept


cdef void trim_output() noexcept
# How many connections have permessage-deflate on (live PerMessageDeflate states): while
# none has, a publish takes the plain path and never looks at a subscriber's compression.
cdef Py_ssize_t active_count
