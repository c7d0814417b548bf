# cython: language_level=3
"""Single frames and byte strings, outside any connection: the tools tests, fuzzers and
clients use (``harpia._frames`` re-exports them)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy

from harpia._wire cimport FIN, RSV1, header_size, write_header

cdef extern from "_mask.h" nogil:
    void harpia_mask(unsigned char *dst, const unsigned char *src, size_t n,
                     const unsigned char *key, size_t phase)

cdef extern from "_utf8.h" nogil:
    int harpia_utf8_feed(uint32_t *state, const unsigned char *s, size_t n)
    int harpia_utf8_complete(uint32_t state)


def serialize_frame(int opcode, payload, *, bint fin=True, bint rsv1=False, mask=None):
    """One frame as bytes (for tests and tools): unmasked unless ``mask`` (4 bytes) is given."""
    cdef bytes data = payload.encode() if isinstance(payload, str) else bytes(payload)
    cdef Py_ssize_t n = len(data)
    cdef bytes key = None if mask is None else bytes(mask)
    if key is not None and len(key) != 4:
        raise ValueError("mask must be 4 bytes")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, header_size(n, key is not None) + n)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t hlen = write_header(
        p, (FIN if fin else 0) | (RSV1 if rsv1 else 0) | (opcode & 0x0F), n,
        NULL if key is None else <const uint8_t *>PyBytes_AS_STRING(key))
    if key is None:
        memcpy(p + hlen, PyBytes_AS_STRING(data), n)
    else:
        harpia_mask(p + hlen, <const uint8_t *>PyBytes_AS_STRING(data), n,
                    <const uint8_t *>PyBytes_AS_STRING(key), 0)
    return out


cdef bytes _mask_key(object mask):
    cdef bytes key = mask if PyBytes_CheckExact(mask) else bytes(mask)
    if len(key) != 4:
        raise ValueError("mask must be 4 bytes")
    return key


def apply_mask(data, mask, Py_ssize_t phase=0):
    """XOR ``data`` with the 4-byte ``mask``, starting ``phase`` bytes into it; a new bytes."""
    cdef bytes key = _mask_key(mask)
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len)
        harpia_mask(<uint8_t *>PyBytes_AS_STRING(out), <const uint8_t *>view.buf, view.len,
                    <const uint8_t *>PyBytes_AS_STRING(key), phase & 3)
    finally:
        PyBuffer_Release(&view)
    return out


def unmask_inplace(buffer, mask, Py_ssize_t phase=0):
    """XOR a writable buffer with the 4-byte ``mask`` in place."""
    cdef bytes key = _mask_key(mask)
    cdef Py_buffer view
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    try:
        harpia_mask(<uint8_t *>view.buf, <const uint8_t *>view.buf, view.len,
                    <const uint8_t *>PyBytes_AS_STRING(key), phase & 3)
    finally:
        PyBuffer_Release(&view)


def utf8_valid(data):
    """True if ``data`` is complete, valid UTF-8 (the validator text frames go through)."""
    cdef uint32_t state = 0
    cdef Py_buffer view
    cdef bint ok
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    ok = harpia_utf8_feed(&state, <const uint8_t *>view.buf, view.len) == 0 and \
        harpia_utf8_complete(state) != 0
    PyBuffer_Release(&view)
    return ok
