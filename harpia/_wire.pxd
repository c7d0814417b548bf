# The RFC 6455 wire format shared by the frame engine, the output buffer, publish and the
# single-frame tools: named opcodes, close codes and ready states, and the helpers that
# write and read a frame header.  Inline, so every user compiles them into its own code.
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy


cpdef enum Opcode:
    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


cpdef enum CloseCode:
    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005          # never on the wire: a close frame without a code
    ABNORMAL_CLOSURE = 1006        # never on the wire: the connection ended without one
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


# As in the browser API and Bun.
cpdef enum ReadyState:
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# The first header byte: FIN, then RSV1 (permessage-deflate marks a compressed message).
cdef enum:
    FIN = 0x80
    RSV1 = 0x40
    MASK_BIT = 0x80
    # The longest header: 2 bytes, an 8-byte length, a 4-byte mask key.
    MAX_HEADER = 14
    # Payloads of ping, pong and close frames (RFC 6455 section 5.5).
    MAX_CONTROL_PAYLOAD = 125


cdef inline bint close_code_ok(int code) noexcept:
    # RFC 6455 section 7.4 and the IANA registry: 1004-1006 and 1015 never go on the wire,
    # 1016-2999 are reserved for future RFCs, 3000-4999 belong to libraries and apps.
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code <= 4999)


cdef inline Py_ssize_t header_size(Py_ssize_t n, bint masked) noexcept:
    cdef Py_ssize_t size = 2
    if n > 65535:
        size = 10
    elif n > 125:
        size = 4
    return size + 4 if masked else size


cdef inline Py_ssize_t write_header(uint8_t *out, uint8_t first_byte, Py_ssize_t n,
                                    const uint8_t *key) noexcept:
    """Write a header for an ``n``-byte payload (masked with ``key`` unless NULL); its size."""
    cdef uint8_t mask_bit = MASK_BIT if key != NULL else 0
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


cdef inline int length_field_size(uint8_t len7) noexcept:
    """Bytes of extended length after the second header byte: 0, 2 or 8."""
    return 2 if len7 == 126 else 8 if len7 == 127 else 0


cdef inline uint64_t decode_length(const uint8_t *h) noexcept:
    """The payload length of the header at ``h`` (its extended length bytes must be there)."""
    cdef uint8_t len7 = h[1] & 0x7F
    cdef uint64_t length
    cdef int i
    if len7 < 126:
        return len7
    if len7 == 126:
        return (<uint64_t>h[2] << 8) | h[3]
    length = 0
    for i in range(8):
        length = (length << 8) | h[2 + i]
    return length


cdef inline bint length_minimal(uint64_t length, uint8_t len7) noexcept:
    """False if a shorter length field could have carried ``length`` (RFC 6455 section 5.2)."""
    if len7 == 126:
        return length >= 126
    if len7 == 127:
        return length >= 65536
    return True


cdef void random_mask_key(uint8_t *key) except *
