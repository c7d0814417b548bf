# cython: language_level=3
"""The growable byte buffer (``ByteBuffer`` in ``_buffer.pxd``) and its out-of-line parts.

Used by the frame engine for the message being reassembled (in a bytes object, so the
finished message needs no copy) and for queued output, and by permessage-deflate for
compressed output.  Growth is the caller's policy where it matters (``buffer_resize``);
``buffer_reserve`` doubles.

A large message's storage is reused for the next one (``message_done``, the spares below):
freed, it would often be the block at the top of the C heap, which the allocator hands
back to the system at once (``brk``) and faults in afresh for the next message, page by
page.  Echoing 1 MiB messages, that was most of the server's CPU time per message.
"""
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

cdef extern from "Python.h":
    char *_bytes_data "PyBytes_AS_STRING" (PyObject *o)
    PyObject *_bytes_new "PyBytes_FromStringAndSize" (const char *s, Py_ssize_t n)
    int _bytes_resize "_PyBytes_Resize" (PyObject **o, Py_ssize_t n)
    void _xdecref "Py_XDECREF" (PyObject *o)
    Py_ssize_t _refcnt "Py_REFCNT" (PyObject *o)
    Py_ssize_t _size "Py_SIZE" (PyObject *o)
    void PyErr_Clear()

cdef enum:
    # Messages from SPARE_MIN bytes up leave their storage as a spare; smaller ones are
    # served from the allocator's free lists without a system call anyway.  At most
    # SPARE_COUNT spares of at most SPARE_MAX bytes are kept: as many as a loop's large
    # messages in flight at once usually are, and what an idle process keeps is bounded.
    SPARE_MIN = 65536
    SPARE_MAX = 4194304
    SPARE_COUNT = 8

# The storage of finished messages that nothing else referred to, kept (per process, under
# the GIL) for the next large messages; the last one kept is the first one taken.
cdef PyObject *_spares[SPARE_COUNT]
cdef int _spare_count = 0


cdef void message_done(object message) noexcept:
    """The engine is done with ``message``: if only the caller still refers to it (the
    handler kept nothing, the transport sent it all), keep its storage as a spare."""
    _keep_spare(<PyObject *>message)


cdef void _keep_spare(PyObject *obj) noexcept:
    # Only when the caller's reference, which goes away after this call, is the last one.
    global _spare_count
    cdef Py_ssize_t n
    if obj == NULL or _refcnt(obj) != 1 or _spare_count == SPARE_COUNT \
            or not PyBytes_CheckExact(<object>obj):
        return
    n = _size(obj)
    if n < SPARE_MIN or n > SPARE_MAX:
        return
    Py_INCREF(<object>obj)
    _spares[_spare_count] = obj
    _spare_count += 1


cdef bint _adopt_spare(ByteBuffer *b, Py_ssize_t cap) noexcept:
    """Grow ``b`` (bytes-backed) into a spare of ``cap`` bytes or more; False if none."""
    global _spare_count
    cdef PyObject *obj
    cdef Py_ssize_t n
    cdef int i = _spare_count - 1
    if cap < SPARE_MIN:
        return False
    while i >= 0 and _size(_spares[i]) < cap:
        i -= 1
    if i < 0:
        return False
    obj = _spares[i]
    _spare_count -= 1
    _spares[i] = _spares[_spare_count]
    # A resize to another size (to the same one it does nothing) forgets the hash a user
    # may have taken of the old message; both stay in place.
    n = _size(obj)
    if _bytes_resize(&obj, n - 1) < 0 or _bytes_resize(&obj, n) < 0:
        PyErr_Clear()              # it freed the object; the caller allocates as before
        return False
    if b.len:
        memcpy(_bytes_data(obj), b.data, b.len)
    _xdecref(b.obj)
    b.obj = obj
    b.data = _bytes_data(obj)
    b.cap = _size(obj)
    return True


cdef int buffer_resize(ByteBuffer *b, Py_ssize_t cap) except -1:
    """Make the buffer ``cap`` bytes (at least ``b.len``); MemoryError leaves it empty."""
    cdef char *data
    if b.in_bytes:
        if b.cap < SPARE_MIN <= cap and _adopt_spare(b, cap):
            return 0
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
        _keep_spare(b.obj)
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

