# cython: language_level=3
"""Client connections on harpia's own socket I/O: a non-blocking TCP connect to an address
literal, handed at once to a ``SocketTransport`` (as the acceptor does for accepted
sockets), so a client's reads go straight into the frame engine too.

Why not ``loop.sock_connect``: on uvloop it resolves even an address literal through the
thread pool, watches the socket on the loop's own epoll set and then stops again, and asks
the kernel for the peer's address it was given: a dozen system calls and a thread
round trip per connection.  Here the connect is started and the transport is live in the
same call: what the protocol writes in ``connection_made`` (the upgrade request) goes out
as soon as the kernel takes it (at once on loopback, else when the socket turns writable,
the transport keeping it meanwhile), and a failed connect surfaces as the transport's
first read or write error (``connection_lost`` with ``ConnectionRefusedError``...).
"""
from libc.string cimport memcpy, memset

from harpia._transport cimport (
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_CLOEXEC, SOCK_NONBLOCK, TCP_NODELAY, SocketPoller,
    SocketTransport, new_transport, setsockopt, sockaddr, sockaddr_in, sockaddr_in6,
    socklen_t,
)

cdef extern from "<sys/socket.h>" nogil:
    int c_socket "socket" (int domain, int type, int protocol)
    int c_connect "connect" (int fd, const sockaddr *addr, socklen_t addrlen)
    int SOCK_STREAM

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
    unsigned short htons(unsigned short)

cdef extern from "<unistd.h>" nogil:
    int c_close "close" (int fd)

cdef extern from "<errno.h>" nogil:
    int errno
    int EINPROGRESS, EINTR

cdef extern from "<string.h>" nogil:
    char *strerror(int err)


def connect_transport(loop, SocketPoller poller, str host, int port, protocol):
    """Start a TCP connection to ``host`` (an IPv4 or IPv6 address literal) and ``port``;
    the transport, ``protocol.connection_made`` called and reading started.  ``None`` when
    ``host`` is not an address literal (a name to resolve, an IPv6 zone).  ``OSError``
    when the connect fails at once; later failures reach ``protocol.connection_lost``."""
    cdef bytes text = host.encode("ascii", "replace")
    cdef unsigned char address[28]           # a sockaddr_in or sockaddr_in6
    cdef sockaddr_in *v4 = <sockaddr_in *>address
    cdef sockaddr_in6 *v6 = <sockaddr_in6 *>address
    cdef socklen_t length
    cdef int family, fd, err
    cdef int one = 1
    memset(address, 0, sizeof(address))
    if inet_pton(AF_INET, text, &v4.sin_addr) == 1:
        family, length = AF_INET, sizeof(sockaddr_in)
        (<sockaddr *>address).sa_family = AF_INET
        v4.sin_port = htons(port)
    elif inet_pton(AF_INET6, text, &v6.sin6_addr) == 1:
        family, length = AF_INET6, sizeof(sockaddr_in6)
        (<sockaddr *>address).sa_family = AF_INET6
        v6.sin6_port = htons(port)
    else:
        return None
    fd = c_socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        err = errno
        raise OSError(err, strerror(err).decode("utf-8", "replace"))
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
    # EINTR too leaves the connect going on in the background (POSIX), as EINPROGRESS.
    if c_connect(fd, <sockaddr *>address, length) < 0 and errno != EINPROGRESS \
            and errno != EINTR:
        err = errno
        c_close(fd)
        raise OSError(err, f"connect to {host} port {port} failed: "
                           f"{strerror(err).decode('utf-8', 'replace')}")
    # From here the transport owns the descriptor (and closes it, even if never started).
    cdef SocketTransport transport = new_transport(loop, poller, fd, family, None, protocol)
    # The peer's address as accept() would have given it: made into a tuple only if asked.
    memcpy(transport.peer, address, length)
    transport.peer_len = length
    transport.start()
    return transport
