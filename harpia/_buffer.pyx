# cython: language_level=3
"""The growable byte buffer (``ByteBuffer`` in ``_buffer.pxd``) and its out-of-line parts.

Used by the frame engine for the message being reassembled (in a bytes object, so the
finished message needs no copy) and for queued output, and by permessage-deflate for
compressed output.  Growth is the caller's policy where it matters (``buffer_resize``);
``buffer_reserve`` doubles.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from libc.stdlib cimport free, realloc

cdef extern from "Python.h":
    char *_bytes_data "PyBytes_AS_STRING" (PyObject *o)
    PyObject *_bytes_new "PyBytes_FromStringAndSize" (const char *s, Py_ssize_t n)
    int _bytes_resize "_PyBytes_Resize" (PyObject **o, Py_ssize_t n)
    void _xdecref "Py_XDECREF" (PyObject *o)


cdef int buffer_resize(ByteBuffer *b, Py_ssize_t cap) except -1:
    """Make the buffer ``cap`` bytes (at least ``b.len``); MemoryError leaves it empty."""
    cdef char *data
    if b.in_bytes:
        if b.obj == NULL:
            b.obj = _bytes_new(NULL, cap)
            if b.obj == NULL:
                b.len = b.cap = 0
                raise MemoryError()
        elif _bytes_resize(&b.obj, cap) < 0:
            # _PyBytes_Resize has freed the object and set MemoryError.
            b.obj = NULL
            b.data = NULL
            b.len = b.cap = 0
            raise MemoryError()
        b.data = _bytes_data(b.obj)
    else:
        data = <char *>realloc(b.data, cap)
        if data == NULL:
            raise MemoryError()
        b.data = data
    b.cap = cap
    return 0


cdef void buffer_free(ByteBuffer *b) noexcept:
    if b.in_bytes:
        _xdecref(b.obj)
        b.obj = NULL
    else:
        free(b.data)
    b.data = NULL
    b.len = 0
    b.cap = 0


cdef bytes buffer_take_bytes(ByteBuffer *b):
    """The content as a bytes object, leaving the buffer empty.  A bytes-backed buffer is
    trimmed to its length and handed over as it is (no copy)."""
    cdef bytes out
    if not b.in_bytes or b.obj == NULL:
        out = PyBytes_FromStringAndSize(b.data, b.len)
        b.len = 0
        return out
    if b.cap != b.len:
        buffer_resize(b, b.len)
    out = <bytes>b.obj           # a new reference; ours goes below
    buffer_free(b)
    return out

