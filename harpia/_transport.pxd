# A transport over a socket harpia reads and writes itself; see _transport.pyx.
cimport cython

from libc.stdint cimport uint32_t

from harpia._buffer cimport ByteBuffer
from harpia._frames cimport FrameEngine
from harpia._output cimport ByteSink


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family
    int accept4(int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t n)
    int getsockopt(int fd, int level, int name, void *value, socklen_t *n)
    int SOCK_NONBLOCK
    int SOCK_CLOEXEC
    int AF_INET
    int AF_INET6
    int AF_UNIX

cdef extern from "<netinet/in.h>" nogil:
    int IPPROTO_TCP
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)

cdef extern from "<netinet/tcp.h>" nogil:
    int TCP_NODELAY


cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        char sun_path[108]


@cython.final
cdef class SocketPoller:
    cdef int epfd
    cdef object loop
    cdef bint watching
    cdef bint retired               # its server closed: stop watching once nothing is left
    cdef Py_ssize_t registered

    cdef int update(self, SocketTransport t, uint32_t events) except -1
    cdef int _unwatch(self) except -1


@cython.final
cdef class SocketTransport(ByteSink):
    cdef int fd
    cdef int family
    cdef object loop
    cdef SocketPoller poller
    cdef uint32_t interest          # the events the poller watches for this socket
    cdef object protocol
    # The protocol when it is the frame engine: reads go into its area at C level.
    cdef FrameEngine engine
    cdef bint buffered_protocol     # an asyncio.BufferedProtocol that is not the engine
    cdef object peername            # made from peer[:peer_len] when first asked for
    cdef unsigned char peer[28]     # a sockaddr_in or sockaddr_in6, as accept gave it
    cdef unsigned char peer_len
    cdef object sockname
    cdef object sock                # a socket.socket over fd, made when asked for
    cdef bint closing
    cdef bint paused                # reading paused by the protocol
    cdef bint want_read             # started, not paused, not closing, not half-closed
    cdef bint eof_written
    cdef bint writing_paused        # the protocol was told pause_writing()
    cdef bint lost                  # connection_lost is scheduled or done
    cdef bint connected             # connection_made was called
    # Output the kernel did not take yet: bytes out.data[out_start:out.len].
    cdef ByteBuffer out
    cdef Py_ssize_t out_start
    # Then large bytes objects kept by reference (the first from held_off), held_size bytes.
    cdef list held
    cdef Py_ssize_t held_off
    cdef Py_ssize_t held_size
    cdef Py_ssize_t high
    cdef Py_ssize_t low

    cdef int start(self) except -1
    cdef void _drop_output(self) noexcept

    cdef inline Py_ssize_t _pending(self) noexcept:
        return self.out.len - self.out_start + self.held_size
    cdef int _read_engine(self) except -1
    cdef int _read_buffered(self) except -1
    cdef int _read_plain(self) except -1
    cdef int _eof(self) except -1
    cdef int _read_failed(self, int err) except -1
    cdef int _add_reader(self) except -1
    cdef int _remove_reader(self) except -1
    cdef uint32_t _wanted(self) noexcept
    cdef int _update(self, bint lazy=*) except -1
    cdef int _read_ready(self) except -1
    cdef int _write_ready(self) except -1
    cdef bint _holdable(self, object owner, const char *p, Py_ssize_t n) noexcept
    cdef Py_ssize_t _send(self, const char *p, Py_ssize_t n) except -2
    cdef Py_ssize_t _taken(self, ssize_t sent) except -2
    cdef int _keep(self, object owner, const char *p, Py_ssize_t n) except -1
    cdef int _force_close(self, object exc) except -1
    cdef int _fatal(self, object exc, str message) except -1
    cdef int _maybe_pause_protocol(self) except -1
    cdef int _maybe_resume_protocol(self) except -1


cdef object peer_address(const void *addr, socklen_t addrlen)
cdef SocketTransport new_transport(object loop, SocketPoller poller, int fd, int family,
                                   object peername, object protocol)
