# cython: language_level=3
"""The RFC 6455 wire format: opcodes, close codes, ready states and the frame header.

The enums are ``IntEnum``s for Python code and plain C constants for the Cython units
that ``cimport`` them; the header helpers are inline functions in ``_wire.pxd``.
"""
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

cdef extern from "sys/random.h" nogil:
    ssize_t getrandom(void *buf, size_t buflen, unsigned int flags)


def is_valid_close_code(int code):
    """True if ``code`` may be sent or received in a close frame."""
    return close_code_ok(code)


cdef uint8_t _random_pool[256]
cdef int _random_left = 0


cdef void random_mask_key(uint8_t *key) except *:
    # Client frames need an unpredictable mask (RFC 6455 section 10.3); one getrandom call
    # serves 64 frames.
    global _random_left
    if _random_left < 4:
        if getrandom(_random_pool, 256, 0) != 256:
            raise OSError("getrandom failed")
        _random_left = 256
    _random_left -= 4
    memcpy(key, &_random_pool[_random_left], 4)
