# cython: language_level=3
"""Publish: one message to many connections, serialized once (compressed once per group
of subscribers that can share the bytes) and copied into each subscriber's output buffer
in C."""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

from harpia cimport _deflate
from harpia._deflate cimport Deflater, PerMessageDeflate, trim_output
from harpia._frames cimport FrameEngine
from harpia._wire cimport (FIN, RSV1, Opcode, decode_length, header_size, length_field_size,
                           write_header)


def publish(tuple subscribers, message, FrameEngine exclude=None, compress=None):
    """Send ``message`` to every engine in ``subscribers`` but ``exclude``.

    The frame is serialized once and the same bytes are copied into each subscriber's
    output buffer, written at the end of the loop turn.  ``subscribers`` is a snapshot
    (a tuple), so a subscriber that closes on the way cannot disturb the iteration.
    Returns how many subscribers took it (their ``send`` would have returned > 0 or -1).

    With permessage-deflate, subscribers that reset their context after every message
    are grouped by compressor (window, level, memory level): the message is compressed
    once per group and the same compressed frame goes to all of the group.  Subscribers
    that keep a context get a compression of their own; the others the plain frame.
    ``compress`` is as in ``FrameEngine.send``.
    """
    cdef const char *p
    cdef Py_ssize_t n, hlen
    cdef int opcode
    cdef bytes encoded
    if isinstance(message, str):
        p = PyUnicode_AsUTF8AndSize(message, &n)
        opcode = Opcode.TEXT
    else:
        encoded = message if PyBytes_CheckExact(message) else bytes(message)
        p = PyBytes_AS_STRING(encoded)
        n = PyBytes_GET_SIZE(encoded)
        opcode = Opcode.BINARY
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, header_size(n, False) + n)
    cdef char *f = PyBytes_AS_STRING(frame)
    hlen = write_header(<uint8_t *>f, FIN | opcode, n, NULL)
    memcpy(f + hlen, p, n)
    if _deflate.active_count == 0 or compress is False:
        return _publish_copy(subscribers, frame, exclude)
    return _publish_deflate(subscribers, frame, opcode, <const uint8_t *>p, n, exclude, compress)


cdef bytes _compressed_frame(Deflater deflater, int opcode, const uint8_t *p, Py_ssize_t n,
                             bytes plain):
    """One server frame holding ``p[:n]`` compressed by ``deflater`` (RSV1), or ``plain``
    when compression does not make it smaller."""
    cdef Py_ssize_t clen, hlen
    cdef const uint8_t *out = deflater.compress(p, n, &clen)
    cdef bytes frame
    cdef char *f
    if clen >= n:
        trim_output()
        return plain
    frame = PyBytes_FromStringAndSize(NULL, header_size(clen, False) + clen)
    f = PyBytes_AS_STRING(frame)
    hlen = write_header(<uint8_t *>f, FIN | RSV1 | opcode, clen, NULL)
    memcpy(f + hlen, out, clen)
    trim_output()
    return frame


cdef Py_ssize_t _publish_deflate(tuple subscribers, bytes plain, int opcode, const uint8_t *p,
                                 Py_ssize_t n, FrameEngine exclude, object compress) except -1:
    cdef Py_ssize_t i, r, taken = 0
    cdef FrameEngine engine
    cdef PerMessageDeflate c
    cdef Deflater deflater, last = None
    cdef bytes frame, last_frame = plain
    cdef dict frames = None
    for i in range(len(subscribers)):
        engine = <FrameEngine>subscribers[i]
        if engine is exclude:
            continue
        c = engine.compression
        if c is None or not c.can_compress or (compress is None and n < c.compress_threshold):
            frame = plain
        elif c.local_no_context_takeover:
            deflater = c.get_deflater()
            if deflater is last:
                frame = last_frame
            else:
                if frames is None:
                    frames = {}
                frame = frames.get(deflater)
                if frame is None:
                    frame = _compressed_frame(deflater, opcode, p, n, plain)
                    frames[deflater] = frame
                last = deflater
                last_frame = frame
        else:
            r = engine._send_compressible(opcode, None, p, n, True)
            if r != 0:
                taken += 1
            continue
        if engine._queue_serialized(PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame)) != 0:
            taken += 1
    return taken


def publish_serialized(tuple subscribers, bytes frame, FrameEngine exclude=None):
    """Copy an already serialized server frame to every subscriber but ``exclude``.

    A whole unmasked text or binary frame is compressed for permessage-deflate subscribers
    as ``publish`` does (once per group); anything else is copied as it is."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(frame)
    cdef Py_ssize_t hlen, plen
    cdef const uint8_t *h = <const uint8_t *>PyBytes_AS_STRING(frame)
    if _deflate.active_count != 0 and n >= 2 and h[1] < 0x80 and \
            (h[0] == FIN | Opcode.TEXT or h[0] == FIN | Opcode.BINARY):
        hlen = 2 + length_field_size(h[1])
        plen = <Py_ssize_t>decode_length(h) if n >= hlen else -1
        if plen >= 0 and hlen + plen == n:
            return _publish_deflate(subscribers, frame, h[0] & 0x0F, h + hlen, plen, exclude, None)
    return _publish_copy(subscribers, frame, exclude)


cdef Py_ssize_t _publish_copy(tuple subscribers, bytes frame, FrameEngine exclude) except -1:
    cdef Py_ssize_t i, taken = 0, n = PyBytes_GET_SIZE(frame)
    cdef const char *f = PyBytes_AS_STRING(frame)
    cdef FrameEngine engine
    for i in range(len(subscribers)):
        engine = <FrameEngine>subscribers[i]
        if engine is exclude:
            continue
        if engine._queue_serialized(f, n) != 0:
            taken += 1
    return taken
