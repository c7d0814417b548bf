# cython: language_level=3
"""``SocketTransport``: a plain TCP or Unix stream socket that harpia reads and writes itself.

Readiness comes from a ``SocketPoller``: one epoll set per listener, which the event loop
watches as a single reader (``add_reader``, which asyncio's selector loop and uvloop both
have).  When it is ready, one Python call (``_ready``) takes every ready socket and calls
its transport at C level.  Why not ``add_reader`` per socket: uvloop makes a poll handle and
a callback handle per socket (about 0.6 KiB of an idle connection), a Python call per read,
and, when the socket reports an error (a reset), stops the poll and never calls the reader,
so a reset connection would linger.  Reads are one ``recv`` per readiness and writes a
``send`` tried at once, so a reply leaves at the end of the read that produced it.  When the protocol is the frame engine the read goes straight
into the engine's receive area (or into the message being reassembled) and the engine is
called at C level: no Python call per read beyond the loop's readiness callback.

It is the part of ``asyncio.Transport`` that harpia's protocols use, with asyncio's
semantics: ``pause_writing`` above the high-water mark and ``resume_writing`` at the low
one (backpressure depends on it), ``close()`` flushes first, ``abort()`` does not,
``connection_lost`` is called exactly once, from a loop callback.  TLS stays on the loop's
own transports.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
cdef extern from "<errno.h>" nogil:
    int errno
    int EAGAIN, EWOULDBLOCK, EINTR
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport uint32_t
from libc.stdlib cimport malloc
from libc.string cimport memcpy, memmove, memset, strerror, strlen

from harpia._buffer cimport buffer_free, buffer_reserve, buffer_trim
from harpia._frames cimport FrameEngine
from harpia._loop cimport LoopContext

cdef extern from "<sys/types.h>":
    ctypedef long ssize_t

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)
    ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    int c_shutdown "shutdown" (int fd, int how)
    int SHUT_WR
    int MSG_NOSIGNAL
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    ssize_t c_sendmsg "sendmsg" (int fd, const msghdr *msg, int flags)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef extern from "<unistd.h>" nogil:
    int c_close "close" (int fd)

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t "epoll_data":
        void *ptr
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL
    uint32_t EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP

cdef enum:
    # asyncio's default marks: pause the protocol over 64 KiB, resume at 16 KiB.
    DEFAULT_HIGH = 65536
    # What a protocol that is not the engine gets per read (asyncio's max_size); copied
    # out of one shared area, since those protocols take bytes objects.
    PLAIN_READ_SIZE = 262144
    # An emptied output buffer larger than this is freed: an idle connection holds nothing.
    KEEP_OUTPUT = 16384
    # A write of this much or more that the kernel does not take at once is kept by
    # reference when it is a bytes object, not copied.
    HOLD_AT = 65536
    # Reads of one ready socket in a row while each fills its room (see _read_ready).
    READS_PER_READY = 8
    # Ready sockets taken per wake-up; more wait for the next loop turn (level-triggered,
    # nothing is lost), so timers and other readers get their turn in between.
    MAX_EVENTS = 256

# Shared by every transport of the process that is not the engine's: filled by recv and
# copied into a bytes object before any Python code runs (so no other thread can see it
# half-read: the GIL is held throughout).
cdef char *_plain_area = NULL

# asyncio.BufferedProtocol, looked up once (asyncio is always loaded when a loop runs).
cdef object _BufferedProtocol = None


cdef object peer_address(const void *address, socklen_t addrlen):
    """A sockaddr as the socket module gives it: ``(host, port)`` for IPv4, ``(host, port,
    flowinfo, scope_id)`` for IPv6, the path for Unix."""
    cdef const sockaddr_storage *addr = <const sockaddr_storage *>address
    cdef char text[64]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    cdef sockaddr_un *un
    cdef Py_ssize_t n
    if addr.ss_family == AF_INET:
        v4 = <sockaddr_in *>addr
        inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v4.sin_port))
    if addr.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>addr
        inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                v6.sin6_scope_id)
    if addr.ss_family == AF_UNIX:
        # A client socket is usually unnamed: '' as socket.getpeername() says.
        un = <sockaddr_un *>addr
        n = <Py_ssize_t>addrlen - 2            # minus sun_family
        if n <= 0:
            return ""
        if un.sun_path[0] == 0:                # the abstract namespace: bytes, as socket does
            return PyBytes_FromStringAndSize(un.sun_path, n)
        return un.sun_path[:strlen(un.sun_path)].decode("utf-8", "surrogateescape")
    return None



@cython.final
cdef class SocketPoller:
    """The epoll set of a listener's connections, watched by the loop as one reader."""

    def __cinit__(self, loop):
        self.loop = loop
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise _os_error(errno)

    def __dealloc__(self):
        if self.epfd >= 0:
            c_close(self.epfd)

    cdef int update(self, SocketTransport t, uint32_t events) except -1:
        """Watch ``t``'s socket for ``events`` (0: not at all).  While watched, the set
        holds a reference to ``t``: the pointer in the epoll set stays valid."""
        cdef epoll_event ev
        cdef int op
        if events == t.interest:
            return 0
        ev.events = events
        ev.data.ptr = <void *>t
        if events == 0:
            op = EPOLL_CTL_DEL
        elif t.interest == 0:
            op = EPOLL_CTL_ADD
        else:
            op = EPOLL_CTL_MOD
        # A failed DEL leaves nothing watched anyway (the socket is gone from the set).
        if epoll_ctl(self.epfd, op, t.fd, &ev) < 0 and op != EPOLL_CTL_DEL:
            raise _os_error(errno)
        if op == EPOLL_CTL_ADD:
            Py_INCREF(t)
            self.registered += 1
            if not self.watching:
                self.watching = True
                self.loop.add_reader(self.epfd, self._ready)
        t.interest = events
        if op == EPOLL_CTL_DEL:
            self.registered -= 1
            if self.registered == 0 and self.retired:
                self._unwatch()
            Py_DECREF(t)                # last: it may free t
        return 0

    def retire(self):
        """The listener stopped accepting: stop watching once no socket is left."""
        self.retired = True
        if self.registered == 0:
            self._unwatch()

    cdef int _unwatch(self) except -1:
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self.epfd)
        return 0

    def _ready(self):
        cdef epoll_event events[MAX_EVENTS]
        cdef int n = epoll_wait(self.epfd, events, MAX_EVENTS, 0)
        cdef int i
        cdef uint32_t ev
        cdef SocketTransport t
        if n <= 0:
            return
        # A callback may stop watching another socket of this batch (and drop the set's
        # reference to it): hold every one until the batch is done.
        for i in range(n):
            Py_INCREF(<SocketTransport>events[i].data.ptr)
        try:
            for i in range(n):
                t = <SocketTransport>events[i].data.ptr
                ev = events[i].events
                try:
                    # An error or a hang-up is news for whichever side is watched.
                    if ev & (EPOLLIN | EPOLLERR | EPOLLHUP) and t.interest & EPOLLIN:
                        t._read_ready()
                    if ev & (EPOLLOUT | EPOLLERR | EPOLLHUP) and t.interest & EPOLLOUT:
                        t._write_ready()
                    if t.interest & ~t._wanted():
                        t._update()         # it paused meanwhile: stop watching for that
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    t._report(exc, "Fatal error in a socket transport")
                    t._force_close(exc)
        finally:
            for i in range(n):
                Py_DECREF(<SocketTransport>events[i].data.ptr)


cdef SocketTransport new_transport(object loop, SocketPoller poller, int fd, int family,
                                   object peername, object protocol):
    """A transport owning ``fd`` (connected, non-blocking); ``start()`` makes it live."""
    cdef SocketTransport t = SocketTransport.__new__(SocketTransport)
    t.fd = fd
    t.family = family
    t.loop = loop
    t.poller = poller
    t.peername = peername
    t.high = DEFAULT_HIGH
    t.low = DEFAULT_HIGH // 4
    t.set_protocol(protocol)
    return t


@cython.final
cdef class SocketTransport(ByteSink):
    """The transport of an accepted plain TCP or Unix socket (see the module docstring)."""

    def __dealloc__(self):
        buffer_free(&self.out)
        if self.fd >= 0 and self.loop is not None and not self.lost:
            # Never started or never lost (an error while accepting): do not leak the fd.
            c_close(self.fd)

    cdef int start(self) except -1:
        """``connection_made``, then reading (unless the protocol paused it meanwhile)."""
        self.connected = True
        try:
            self.protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.connection_made() call failed.")
            return 0
        if not self.closing and not self.paused:
            try:
                self._add_reader()
            except OSError as exc:          # out of epoll watches (max_user_watches)
                self._fatal(exc, "cannot watch an accepted socket")
        return 0

    # ------------------------------------------------------------------ protocol

    def set_protocol(self, protocol):
        global _BufferedProtocol
        self.protocol = protocol
        if isinstance(protocol, FrameEngine):
            self.engine = <FrameEngine>protocol
            self.buffered_protocol = False
            return
        self.engine = None
        if _BufferedProtocol is None:
            import asyncio
            _BufferedProtocol = asyncio.BufferedProtocol
        self.buffered_protocol = isinstance(protocol, _BufferedProtocol)

    def get_protocol(self):
        return self.protocol

    def get_extra_info(self, name, default=None):
        if name == "peername":
            if self.peername is None and self.peer_len:
                self.peername = peer_address(self.peer, self.peer_len)
            return self.peername
        if name == "sockname":
            if self.sockname is None and not self.lost:
                self.sockname = self._socket().getsockname()
            return self.sockname if self.sockname is not None else default
        if name == "socket":
            return self._socket() if not self.lost else default
        return default

    def _socket(self):
        # Made only when asked for; detached (not closed) when the connection ends, since
        # the fd is ours.
        if self.sock is None:
            import socket
            self.sock = socket.socket(fileno=self.fd)
        return self.sock

    def is_closing(self):
        return self.closing

    # ------------------------------------------------------------------ reading

    def is_reading(self):
        return not self.paused and not self.closing

    def pause_reading(self):
        if self.closing or self.paused:
            return
        self.paused = True
        self._remove_reader()

    def resume_reading(self):
        if self.closing or not self.paused:
            return
        self.paused = False
        self._add_reader()

    cdef int _add_reader(self) except -1:
        self.want_read = True
        return self._update(True)

    cdef int _remove_reader(self) except -1:
        # Lazily: the socket stays watched until it reports something (then the poller
        # stops watching it) or the connection ends.  The upgrade pauses reading while it
        # answers and resumes at once: that costs no system call.
        self.want_read = False
        return 0

    cdef uint32_t _wanted(self) noexcept:
        cdef uint32_t events = 0
        if self.fd >= 0:
            if self.want_read:
                events = EPOLLIN
            if self._pending():
                events |= EPOLLOUT
        return events

    cdef int _update(self, bint lazy=False) except -1:
        # ``lazy``: only start watching for more, never for less (see _remove_reader).
        cdef uint32_t events = self._wanted()
        if lazy and not (events & ~self.interest):
            return 0
        return self.poller.update(self, events)

    cdef int _read_ready(self) except -1:
        cdef int i
        if self.lost or not self.want_read:
            return 0
        if self.engine is not None and self.engine.loop is not None:
            # A read that fills all the room it was given has likely left more behind
            # (a large message): read again now rather than after another trip through
            # epoll, a few times at most so that one busy socket does not hold up the
            # others of the batch.  A short read means the socket is empty: no read is
            # spent on finding EAGAIN.
            for i in range(READS_PER_READY):
                if not self._read_engine():
                    return 0
                if self.lost or not self.want_read or self.engine is None \
                        or self.engine.loop is None:
                    return 0
            return 0
        if self.buffered_protocol or self.engine is not None:
            return self._read_buffered()
        return self._read_plain()

    cdef int _read_engine(self) except -1:
        # FrameEngine.get_buffer + buffer_updated, at C level; 1 if the read filled all
        # the room it had (more may be waiting), else 0.
        cdef FrameEngine engine = self.engine
        cdef LoopContext context = engine.loop
        cdef Py_ssize_t window = engine._direct_window()
        cdef ssize_t n
        cdef char *area
        try:
            if window:
                # Inside a large frame: straight into the message, unmasked in place.
                n = c_recv(self.fd, engine.msg.data + engine.msg.len, window, 0)
                if n > 0:
                    engine._read_begin(n)
                    engine.in_feed = True
                    engine.read_frames = engine.read_inflated = 0
                    try:
                        engine._payload_direct(n)
                    finally:
                        engine.in_feed = False
                    engine._read_end()
                    # Full, with more of the frame to come (a read that ended the frame
                    # has nothing behind it in a request-response exchange).
                    return n == window and engine.in_payload and engine.frame_left > 0
            else:
                if context.recv_area is None:
                    context.receive_area()
                area = PyByteArray_AS_STRING(context.recv_area)
                n = c_recv(self.fd, area, PyByteArray_GET_SIZE(context.recv_area), 0)
                if n > 0:
                    engine._feed_ptr(<const unsigned char *>area, n, None)
                    return n == PyByteArray_GET_SIZE(context.recv_area)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.buffer_updated() call failed.")
            return 0
        if n == 0:
            return self._eof()
        return self._read_failed(errno)

    cdef int _read_buffered(self) except -1:
        cdef Py_buffer view
        cdef ssize_t n
        cdef int err = 0
        try:
            buf = self.protocol.get_buffer(-1)
            PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
            try:
                if view.len == 0:
                    raise RuntimeError("get_buffer() returned an empty buffer")
                n = c_recv(self.fd, view.buf, view.len, 0)
                err = errno
            finally:
                PyBuffer_Release(&view)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.get_buffer() call failed.")
            return 0
        if n == 0:
            return self._eof()
        if n < 0:
            return self._read_failed(err)
        try:
            self.protocol.buffer_updated(n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.buffer_updated() call failed.")
        return 0

    cdef int _read_plain(self) except -1:
        global _plain_area
        cdef ssize_t n
        if _plain_area == NULL:
            _plain_area = <char *>malloc(PLAIN_READ_SIZE)
            if _plain_area == NULL:
                raise MemoryError()
        n = c_recv(self.fd, _plain_area, PLAIN_READ_SIZE, 0)
        if n == 0:
            return self._eof()
        if n < 0:
            return self._read_failed(errno)
        data = PyBytes_FromStringAndSize(_plain_area, n)
        try:
            self.protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.data_received() call failed.")
        return 0

    cdef int _read_failed(self, int err) except -1:
        if err == EAGAIN or err == EWOULDBLOCK or err == EINTR:
            return 0                      # a spurious wake-up: the loop calls again
        self._fatal(_os_error(err), "Fatal read error on socket transport")
        return 0

    cdef int _eof(self) except -1:
        cdef object keep_open
        try:
            keep_open = self.protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.eof_received() call failed.")
            return 0
        if keep_open:
            # Half-closed: the peer sends no more, we may still write.
            self._remove_reader()
        else:
            self.close()
        return 0

    # ------------------------------------------------------------------ writing

    def write(self, data):
        cdef Py_buffer view
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len:
                self.write_owned(data, <const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def writelines(self, list_of_data):
        for data in list_of_data:
            self.write(data)

    cdef Py_ssize_t buffered_size(self) noexcept:
        return self._pending()

    cdef int write_owned(self, object owner, const char *p, Py_ssize_t n) except -1:
        """``write_ptr`` of the whole rest of ``owner`` (an immutable bytes object from
        ``p``): what the kernel does not take is kept by reference, not copied (a large
        message would cost a copy and the pages to hold it, per message)."""
        cdef Py_ssize_t sent = 0
        if not self._holdable(owner, p, n):
            return self.write_ptr(p, n)
        if self._pending() == 0:
            sent = self._send(p, n)
            if sent < 0 or sent == n:
                return 0
        return self._keep(owner, p + sent, n - sent)

    cdef int write_ptr(self, const char *p, Py_ssize_t n) except -1:
        """``write``, at C level (the frame engine's output comes this way)."""
        cdef Py_ssize_t sent = 0
        if self.lost or n == 0:
            return 0                        # as asyncio: writes after the end are dropped
        if self._pending() == 0:
            sent = self._send(p, n)
            if sent < 0 or sent == n:
                return 0
        return self._keep(None, p + sent, n - sent)

    cdef int write_pair(self, const char *head, Py_ssize_t hn, object owner, const char *p,
                        Py_ssize_t n) except -1:
        """``head`` and the payload in one sendmsg when nothing waits before them: what the
        kernel does not take is kept as write_ptr and write_owned keep it."""
        cdef msghdr msg
        cdef iovec iov[2]
        cdef Py_ssize_t sent
        if self.lost or self._pending() != 0 or hn == 0:
            return ByteSink.write_pair(self, head, hn, owner, p, n)
        memset(&msg, 0, sizeof(msg))
        iov[0].iov_base = <void *>head
        iov[0].iov_len = hn
        iov[1].iov_base = <void *>p
        iov[1].iov_len = n
        msg.msg_iov = iov
        msg.msg_iovlen = 2
        sent = self._taken(c_sendmsg(self.fd, &msg, MSG_NOSIGNAL))
        if sent < 0 or sent == hn + n:
            return 0
        if sent < hn:
            self._keep(None, head + sent, hn - sent)
            sent = 0
        else:
            sent -= hn
        if owner is not None and self._holdable(owner, p, n):
            return self._keep(owner, p + sent, n - sent)
        return self._keep(None, p + sent, n - sent)

    cdef bint _holdable(self, object owner, const char *p, Py_ssize_t n) noexcept:
        # Worth keeping by reference: large, the rest of an immutable bytes object.
        cdef Py_ssize_t offset
        if n < HOLD_AT or not PyBytes_CheckExact(owner) or self.lost:
            return False
        offset = p - PyBytes_AS_STRING(owner)
        return offset >= 0 and offset + n == PyBytes_GET_SIZE(owner)

    cdef Py_ssize_t _send(self, const char *p, Py_ssize_t n) except -2:
        # One send; the bytes the kernel took (0 when it would block), -1 after a fatal error.
        return self._taken(c_send(self.fd, p, n, MSG_NOSIGNAL))

    cdef Py_ssize_t _taken(self, ssize_t sent) except -2:
        # What a send or sendmsg returned, as the bytes the kernel took: 0 when it would
        # block (or a signal came first), -1 once a real error has closed the transport.
        cdef int err
        if sent < 0:
            err = errno
            if err != EAGAIN and err != EWOULDBLOCK and err != EINTR:
                self._fatal(_os_error(err), "Fatal write error on socket transport")
                return -1
            return 0
        return sent

    cdef int _keep(self, object owner, const char *p, Py_ssize_t n) except -1:
        """Keep ``n`` bytes from ``p`` the kernel did not take, behind what waits already:
        by reference to ``owner`` (a bytes object ``p`` ends) or else copied."""
        cdef Py_ssize_t pending = self._pending()
        cdef Py_ssize_t offset
        if owner is not None:
            offset = p - PyBytes_AS_STRING(owner)
            if self.held is None:
                self.held = [owner]
                self.held_off = offset
            else:
                self.held.append(owner[offset:] if offset else owner)
            self.held_size += n
        elif self.held is not None:
            # Behind output kept by reference: queued after it, in order.
            self.held.append(PyBytes_FromStringAndSize(p, n))
            self.held_size += n
        else:
            if pending and self.out_start and self.out.len + n > self.out.cap:
                # Reuse the room the kernel freed at the front before growing.
                memmove(self.out.data, self.out.data + self.out_start, pending)
                self.out.len = pending
                self.out_start = 0
            buffer_reserve(&self.out, n)
            memcpy(self.out.data + self.out.len, p, n)
            self.out.len += n
        if pending == 0:
            self._update(True)              # watch for writability
        return self._maybe_pause_protocol()

    cdef int _write_ready(self) except -1:
        cdef ssize_t sent
        cdef int err
        cdef bytes first
        cdef bint from_out = self.out.len != self.out_start
        if self.lost or not self._pending():
            return 0
        if from_out:
            sent = c_send(self.fd, self.out.data + self.out_start, self.out.len - self.out_start,
                          MSG_NOSIGNAL)
        else:
            first = self.held[0]
            sent = c_send(self.fd, PyBytes_AS_STRING(first) + self.held_off,
                          PyBytes_GET_SIZE(first) - self.held_off, MSG_NOSIGNAL)
        if sent < 0:
            err = errno
            if err == EAGAIN or err == EWOULDBLOCK or err == EINTR:
                return 0
            self._drop_output()
            self._update()
            self._fatal(_os_error(err), "Fatal write error on socket transport")
            return 0
        if from_out:
            self.out_start += sent
            if self.out_start == self.out.len:
                self.out.len = self.out_start = 0
                buffer_trim(&self.out, KEEP_OUTPUT)
        else:
            self.held_off += sent
            self.held_size -= sent
            if self.held_off == PyBytes_GET_SIZE(first):
                del self.held[0]
                self.held_off = 0
                if not self.held:
                    self.held = None
        self._maybe_resume_protocol()      # may write more
        if not self._pending() and not self.lost:
            self._update()
            if self.closing:
                self._call_connection_lost(None)
            elif self.eof_written:
                c_shutdown(self.fd, SHUT_WR)
        return 0

    def get_write_buffer_size(self):
        return self._pending()

    cdef void _drop_output(self) noexcept:
        self.out.len = self.out_start = 0
        self.held = None
        self.held_off = self.held_size = 0

    def get_write_buffer_limits(self):
        return (self.low, self.high)

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            high = DEFAULT_HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high = high
        self.low = low
        self._maybe_pause_protocol()

    cdef int _maybe_pause_protocol(self) except -1:
        if self._pending() <= self.high or self.writing_paused:
            return 0
        self.writing_paused = True
        try:
            self.protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(exc, "protocol.pause_writing() failed")
        return 0

    cdef int _maybe_resume_protocol(self) except -1:
        if self.writing_paused and self._pending() <= self.low:
            self.writing_paused = False
            try:
                self.protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._report(exc, "protocol.resume_writing() failed")
        return 0

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self.closing or self.eof_written:
            return
        self.eof_written = True
        if not self._pending():
            c_shutdown(self.fd, SHUT_WR)

    # ------------------------------------------------------------------ closing

    def close(self):
        """Stop reading, write what is buffered, then close (``connection_lost(None)``)."""
        if self.closing:
            return
        self.closing = True
        self._remove_reader()
        if not self._pending() and not self.lost:
            self.lost = True
            self.loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        """Close at once, dropping what is buffered."""
        self._force_close(None)

    cdef int _force_close(self, object exc) except -1:
        if self.lost:
            return 0
        self._drop_output()
        self.closing = True
        self._remove_reader()
        self.lost = True
        self.loop.call_soon(self._call_connection_lost, exc)
        return 0

    cdef int _fatal(self, object exc, str message) except -1:
        # A reset or a broken pipe is the peer's doing, not an error worth reporting.
        if not isinstance(exc, OSError):
            self._report(exc, message)
        return self._force_close(exc)

    def _report(self, exc, message):
        self.loop.call_exception_handler({"message": message, "exception": exc,
                                          "transport": self, "protocol": self.protocol})

    def _call_connection_lost(self, exc):
        self.lost = True
        protocol = self.protocol
        try:
            if self.connected:
                protocol.connection_lost(exc)
        finally:
            self.want_read = False
            self._drop_output()
            self._update()                  # before the fd is closed (and reused)
            if self.sock is not None:
                self.sock.detach()
                self.sock = None
            if self.fd >= 0:
                c_close(self.fd)
                self.fd = -1
            buffer_free(&self.out)
            self.out_start = 0
            self.protocol = None
            self.engine = None

    def __repr__(self):
        state = "closed" if self.lost else "closing" if self.closing else "open"
        return f"<SocketTransport fd={self.fd} {state} peer={self.get_extra_info('peername')!r}>"


cdef object _os_error(int err):
    # As socket's own errors: ConnectionResetError, BrokenPipeError... by errno.
    return OSError(err, strerror(err).decode("utf-8", "replace"))
