# The C surface of the frame engine, for other Cython modules.  Users see _frames.pyi.
cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from harpia._buffer cimport ByteBuffer
from harpia._sender cimport FrameSender


cdef class FrameEngine(FrameSender):
    # --- settings (fixed for the life of a connection) ---
    cdef readonly Py_ssize_t max_payload_length
    cdef readonly Py_ssize_t inbound_limit
    cdef uint8_t rsv_allowed

    # --- connection state ---
    cdef readonly int close_code_received
    cdef readonly object close_reason_received
    # --- counters for app.stats(): plain C increments, nothing when nobody reads them ---
    cdef readonly unsigned long long messages_in
    cdef readonly unsigned long long bytes_in
    cdef public uint32_t last_seen

    # --- parser state: a frame header is kept here until it is complete ---
    cdef uint8_t hdr[14]
    cdef int hdr_have
    cdef int hdr_need
    cdef bint in_payload
    cdef int frame_opcode
    cdef bint frame_fin
    cdef uint8_t frame_rsv
    cdef bint frame_masked
    cdef uint8_t frame_key[4]
    cdef uint64_t frame_left
    cdef uint64_t frame_done
    cdef bint input_closed
    cdef bint recv_direct          # get_buffer() handed out the message itself (see there)
    cdef object recv_spare         # get_buffer()'s area when there is no loop context

    # --- the message being reassembled (data frames), and the control frame ---
    cdef int msg_opcode
    cdef bint msg_compressed
    cdef ByteBuffer msg            # bytes-backed: handed to the handler without a copy
    cdef uint32_t utf8_state
    cdef uint8_t ctl_buf[125]
    cdef int ctl_len

    # --- inbound flow control: bytes held while an async handler runs ---
    cdef bint delivery_paused
    cdef list held
    cdef Py_ssize_t held_size
    cdef Py_ssize_t read_frames        # frames parsed from the current read (fairness)
    cdef Py_ssize_t read_inflated      # bytes inflated from the current read (fairness)
    cdef bint inflate_yielding         # parsing stopped for this loop turn: too much inflated


    # --- the user's message handler, bound once ---
    cdef object on_message
    cdef int message_arity
    cdef bint message_async
    # called with a sampled handler duration in nanoseconds (latency histograms), or None
    cdef public object handler_timer

    # Every method below is final: Python subclasses cannot override cdef methods anyway,
    # and a final method is a direct C call (the compiler may inline it), not a vtable call.

    @cython.final
    cdef int _feed(self, object data) except -1
    @cython.final
    cdef int _feed_ptr(self, const uint8_t *data, Py_ssize_t n, object owner) except -1
    @cython.final
    cdef int _read_begin(self, Py_ssize_t n) except -1
    @cython.final
    cdef int _read_end(self) except -1
    @cython.final
    cdef Py_ssize_t _direct_window(self) except -1
    @cython.final
    cdef int _payload_direct(self, Py_ssize_t n) except -1
    @cython.final
    cdef int _payload_landed(self, const uint8_t *dst, Py_ssize_t n) except -1
    @cython.final
    cdef int _hold(self, bytes rest) except -1
    @cython.final
    cdef bint _delivery_blocked(self) noexcept
    @cython.final
    cdef int _parse_held(self) except -1
    @cython.final
    cdef int _fail(self, int code, str reason) except -1
    @cython.final
    cdef int _check_first_two_bytes(self) except -2
    @cython.final
    cdef int _parse(self, const uint8_t *data, Py_ssize_t n, Py_ssize_t *used) except -1
    @cython.final
    cdef int _header_complete(self) except -1
    @cython.final
    cdef Py_ssize_t _payload_chunk(self, const uint8_t *src, Py_ssize_t n) except -1
    @cython.final
    cdef int _frame_complete(self) except -1
    @cython.final
    cdef Py_ssize_t _inflate(self, const uint8_t *src, Py_ssize_t n, const uint8_t *key,
                             size_t phase, bint tail) except -1
    cdef int _output_drained(self) except -1
    @cython.final
    cdef int _control_frame(self) except -1
    @cython.final
    cdef int _deliver(self, object message) except -1
    @cython.final
    cdef int _msg_reserve(self, Py_ssize_t extra) except -1
    @cython.final
    cdef void _msg_reset(self) noexcept
    @cython.final
    cdef void _drop_compression(self) noexcept

