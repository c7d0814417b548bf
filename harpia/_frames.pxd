# The C surface of the frame engine, for other Cython modules.  Users see _frames.pyi.
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from harpia._deflate cimport PerMessageDeflate


cdef class FrameEngine:
    # --- settings (fixed for the life of a connection) ---
    cdef readonly bint client
    cdef readonly Py_ssize_t max_payload_length
    cdef readonly Py_ssize_t backpressure_limit
    cdef readonly bint close_on_backpressure_limit
    cdef readonly Py_ssize_t inbound_limit
    cdef uint8_t rsv_allowed

    # --- connection state ---
    cdef public int ready_state
    cdef readonly int close_code_sent
    cdef readonly int close_code_received
    cdef readonly object close_reason_received
    cdef readonly object close_reason_sent
    cdef readonly Py_ssize_t dropped
    # --- counters for app.stats(): plain C increments, nothing when nobody reads them ---
    cdef readonly unsigned long long messages_in
    cdef readonly unsigned long long messages_out
    cdef readonly unsigned long long bytes_in
    cdef readonly unsigned long long bytes_out
    cdef readonly unsigned long long backpressure_events
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
    cdef object recv_spare         # get_buffer()'s area when there is no cork to share one

    # --- the message being reassembled (data frames), and the control frame ---
    cdef int msg_opcode
    cdef bint msg_compressed
    cdef PyObject *msg_obj
    cdef Py_ssize_t msg_len
    cdef Py_ssize_t msg_cap
    cdef uint32_t utf8_state
    cdef uint8_t ctl_buf[125]
    cdef int ctl_len
    # permessage-deflate, when negotiated (None otherwise: the plain paths never look further)
    cdef readonly PerMessageDeflate compression
    cdef bint deflate_counted      # in _deflate_engines (a C flag: GC may clear the object first)

    # --- inbound flow control: bytes held while an async handler runs ---
    cdef bint delivery_paused
    cdef list held
    cdef Py_ssize_t held_size
    cdef uint8_t read_pause_reasons
    cdef Py_ssize_t read_frames        # frames parsed from the current read (fairness)
    cdef Py_ssize_t read_inflated      # bytes inflated from the current read (fairness)
    cdef bint inflate_yielding         # parsing stopped for this loop turn: too much inflated

    # --- outbound: the frames queued this loop turn, written at its end ---
    cdef char *out_buf
    cdef Py_ssize_t out_len
    cdef Py_ssize_t out_cap
    cdef public Py_ssize_t transport_buffered
    cdef bint writing_paused
    cdef bint awaiting_drain
    cdef bint in_feed
    cdef bint corked
    cdef object writer
    cdef object writelines
    cdef object buffer_size
    cdef Cork cork

    # --- the user's message handler, bound once ---
    cdef object on_message
    cdef int message_arity
    cdef bint message_async
    # called with a sampled handler duration in nanoseconds (latency histograms), or None
    cdef public object handler_timer
    cdef list events

    cdef int _event(self, tuple event) except -1
    cdef int _feed(self, object data) except -1
    cdef int _feed_ptr(self, const uint8_t *data, Py_ssize_t n, object owner) except -1
    cdef int _read_begin(self, Py_ssize_t n) except -1
    cdef int _read_end(self) except -1
    cdef Py_ssize_t _direct_window(self) except -1
    cdef int _payload_direct(self, Py_ssize_t n) except -1
    cdef int _msg_resize(self, Py_ssize_t cap) except -1
    cdef int _payload_landed(self, const uint8_t *dst, Py_ssize_t n) except -1
    cdef int _hold(self, bytes rest) except -1
    cdef bint _stopped(self) noexcept
    cdef int _parse_held(self) except -1
    cdef int _fail(self, int code, str reason) except -1
    cdef int _first_two_bytes(self) except -2
    cdef int _parse(self, const uint8_t *data, Py_ssize_t n, Py_ssize_t *used) except -1
    cdef int _header_complete(self) except -1
    cdef int _payload_chunk(self, const uint8_t *src, Py_ssize_t n) except -1
    cdef int _frame_complete(self) except -1
    cdef int _compressed_chunk(self, const uint8_t *src, Py_ssize_t n) except -1
    cdef int _inflate(self, const uint8_t *src, Py_ssize_t n) except -1
    cdef int _control_frame(self) except -1
    cdef int _deliver(self, object message) except -1
    cdef int _msg_reserve(self, Py_ssize_t extra) except -1
    cdef void _msg_reset(self) noexcept
    cdef int _out_reserve(self, Py_ssize_t extra) except -1
    cdef Py_ssize_t _append_frame(self, int opcode, const uint8_t *data, Py_ssize_t n,
                                  uint8_t first_byte_bits) except -1
    cdef Py_ssize_t _send_frame(self, int opcode, const uint8_t *data, Py_ssize_t n,
                                uint8_t rsv) except -2
    cdef Py_ssize_t _queue_serialized(self, const char *frame, Py_ssize_t n) except -2
    cdef Py_ssize_t _send_compressible(self, int opcode, object payload, const uint8_t *data,
                                       Py_ssize_t n, object compress) except -2
    cdef Py_ssize_t _send_message(self, object message, object compress) except -2
    cdef void _drop_compression(self) noexcept
    cdef bint _can_write_direct(self) noexcept
    cdef Py_ssize_t _account(self, Py_ssize_t total) except -2
    cdef int _start_close(self, int code, str reason) except -1
    cdef Py_ssize_t _send_direct(self, int opcode, object payload, const uint8_t *data,
                                 Py_ssize_t n) except -2
    cdef int _mark_dirty(self) except -1
    cdef int flush(self) except -1
    cdef int _check_drain(self) except -1
    cdef int _pause_reading(self, uint8_t reason) except -1
    cdef int _resume_reading(self, uint8_t reason) except -1


cdef class Cork:
    cdef list dirty
    cdef bint scheduled
    cdef object call_soon
    cdef object _run_cb
    # --- busy polling (off when poll_window_ns == 0) ---
    cdef int64_t poll_window_ns
    cdef int64_t poll_deadline_ns
    cdef readonly bint polling
    cdef bint poll_activity
    cdef object _poll_cb
    # --- the receive area shared by the loop's connections (reads are one at a time) ---
    cdef bytearray recv_area
    cdef object recv_view
    cdef int add(self, FrameEngine engine) except -1
    cdef int activity(self) except -1
