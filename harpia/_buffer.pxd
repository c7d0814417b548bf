# One growable byte buffer for the frame engine's message, its output and deflate's output.
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.object cimport PyObject


cdef struct ByteBuffer:
    char *data              # NULL until the first reserve/resize
    Py_ssize_t len          # bytes in use
    Py_ssize_t cap          # bytes allocated
    # A message's buffer lives in a bytes object we own alone (``in_bytes``): it is grown
    # in place and handed to the handler without a final copy.  Other buffers are malloc'd.
    bint in_bytes
    PyObject *obj


cdef int buffer_resize(ByteBuffer *b, Py_ssize_t cap) except -1
cdef void buffer_free(ByteBuffer *b) noexcept
cdef bytes buffer_take_bytes(ByteBuffer *b)
cdef void message_done(object message) noexcept


cdef inline int buffer_reserve(ByteBuffer *b, Py_ssize_t extra) except -1:
    """Room for ``extra`` more bytes: at least doubles, so appends cost amortized O(1)."""
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap
    if need <= b.cap:
        return 0
    cap = 2 * b.cap if b.cap >= 512 else 1024
    return buffer_resize(b, cap if cap > need else need)


cdef inline void buffer_trim(ByteBuffer *b, Py_ssize_t keep) noexcept:
    """Free an empty buffer that grew past ``keep`` bytes: an idle owner holds little."""
    if b.len == 0 and b.cap > keep:
        buffer_free(b)


cdef inline bytes buffer_copy_bytes(ByteBuffer *b):
    """The content as a new bytes object; the buffer is left as it is.  Inline: the end of
    every loop turn calls it once per connection with output."""
    return PyBytes_FromStringAndSize(b.data, b.len)


cdef inline Py_ssize_t buffer_doubling_room(ByteBuffer *b, Py_ssize_t floor) noexcept:
    """The room of ``b``, but no more than growth by doubling from ``floor`` would have left
    (at most ``b.len``): a message grown into a spare (see _buffer.pyx) may hold more, yet
    what is read into it still follows what arrived, in steps at powers of two."""
    cdef Py_ssize_t room = b.cap - b.len
    cdef Py_ssize_t limit = floor
    if room <= b.len or room <= floor:
        return room
    while limit <= b.len:
        limit *= 2
    return limit - b.len if limit - b.len < room else room
