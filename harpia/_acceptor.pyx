# cython: language_level=3
"""``SocketAcceptor``: accepts on a listening plain TCP or Unix socket, harpia's own way.

When the listening socket is readable the loop calls ``_accept_ready``, which accepts up to
``ACCEPT_BATCH`` connections with ``accept4`` (non-blocking and close-on-exec in the same
call), has ``TCP_NODELAY`` on TCP (inherited from the listening socket, where it is set
once, when the kernel passes it on: Linux does), turns the peer's address into ``(host, port)`` from what
``accept4`` returned (no ``getpeername``) and starts a ``SocketTransport`` with a protocol
from ``protocol_factory``.  Out of descriptors (``EMFILE``/``ENFILE``) or memory, it
reports through ``on_error(errno)``, stops watching the socket and tries again after
``ACCEPT_RETRY_DELAY``: never a busy loop on a socket it cannot accept from.

``AcceptingServer`` is what ``asyncio.Server`` was for such a listener: ``sockets``,
``close()``, ``is_serving()``, ``wait_closed()``.
"""
from libc.string cimport memcpy
cdef extern from "<errno.h>" nogil:
    int errno
    int EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED, EPROTO, EPERM, EMFILE, ENFILE, ENOBUFS, ENOMEM

from harpia._transport cimport (AF_INET, AF_INET6, AF_UNIX, IPPROTO_TCP, SOCK_CLOEXEC,
                                SOCK_NONBLOCK, TCP_NODELAY, SocketPoller, SocketTransport,
                                accept4, getsockopt, new_transport, peer_address, setsockopt,
                                sockaddr,
                                sockaddr_storage, socklen_t)

cdef enum:
    # Why 64: enough to empty the backlog of a connect burst in a few loop turns, few enough
    # that the connections already open still get their turn in between.
    ACCEPT_BATCH = 64

#: Seconds to wait before accepting again after running out of descriptors or memory.
ACCEPT_RETRY_DELAY = 0.25


cdef class SocketAcceptor:
    """Accepts connections on ``sock`` for ``protocol_factory`` (see the module docstring)."""

    cdef object loop
    cdef object sock
    cdef object protocol_factory
    cdef object on_error
    cdef int fd
    cdef int family
    cdef bint tcp
    # Whether accepted sockets come with TCP_NODELAY from the listener: -1 not known yet
    # (the first accepted socket tells), 1 yes (nothing to set), 0 no (set on each).
    cdef int nodelay_inherited
    cdef readonly bint serving
    cdef bint watching
    cdef object retry
    cdef SocketPoller poller

    def __init__(self, loop, sock, protocol_factory, on_error, poller=None):
        self.loop = loop
        self.poller = SocketPoller(loop) if poller is None else poller
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.on_error = on_error
        self.fd = sock.fileno()
        self.family = sock.family
        self.tcp = self.family == AF_INET or self.family == AF_INET6
        self.nodelay_inherited = 0
        if self.tcp:
            # Set once here rather than once per connection: a system call less per accept.
            try:
                sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
                self.nodelay_inherited = -1
            except OSError:
                pass
        sock.setblocking(False)

    def start(self):
        """Start accepting."""
        self.serving = True
        self._watch()

    def close(self):
        """Stop accepting; the listening socket is closed too."""
        self.serving = False
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self.fd)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.poller.retire()

    def _watch(self):
        self.retry = None
        if self.serving and not self.watching:
            self.watching = True
            self.loop.add_reader(self.fd, self._accept_ready)

    def _accept_ready(self):
        cdef sockaddr_storage addr
        cdef socklen_t addrlen
        cdef int fd, err
        cdef int i
        cdef SocketTransport transport
        for i in range(ACCEPT_BATCH):
            if not self.serving:
                return
            addrlen = sizeof(addr)
            fd = accept4(self.fd, <sockaddr *>&addr, &addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                err = errno
                if err == EAGAIN or err == EWOULDBLOCK:
                    return
                if err == EINTR or err == ECONNABORTED or err == EPROTO or err == EPERM:
                    continue                 # that one connection is gone; go on
                self.on_error(err)
                if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                    # Readable until someone accepts: watching now would spin.  Connections
                    # wait in the backlog meanwhile.
                    self.watching = False
                    self.loop.remove_reader(self.fd)
                    self.retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._watch)
                return
            if self.tcp and self.nodelay_inherited != 1:
                self._set_nodelay(fd)
            # The peer's address is kept as accept gave it, made a tuple only if asked for
            # (most connections never are); a Unix peer's at once (it may be long).
            transport = new_transport(self.loop, self.poller, fd, self.family,
                                      peer_address(&addr, addrlen) if not self.tcp else None,
                                      None)
            if self.tcp and addrlen <= sizeof(transport.peer):
                memcpy(transport.peer, &addr, addrlen)
                transport.peer_len = addrlen
            try:
                transport.set_protocol(self.protocol_factory())
            except BaseException:
                transport.abort()
                raise
            transport.start()


    cdef void _set_nodelay(self, int fd) noexcept:
        cdef int value = 0, one = 1
        cdef socklen_t n = sizeof(value)
        if self.nodelay_inherited == -1:
            getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &n)
            self.nodelay_inherited = 1 if value else 0
            if value:
                return
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))


class AcceptingServer:
    """The listening sockets of a listener that accepts itself, as ``asyncio.Server`` shows
    them: ``sockets``, ``close()``, ``is_serving()``, ``wait_closed()``."""

    def __init__(self, loop, sockets, protocol_factory, on_error):
        self._loop = loop
        self._sockets = list(sockets)
        poller = SocketPoller(loop)        # one epoll set for all its connections
        self._acceptors = [SocketAcceptor(loop, s, protocol_factory, on_error, poller)
                           for s in self._sockets]
        for acceptor in self._acceptors:
            acceptor.start()

    @property
    def sockets(self):
        """The listening sockets (empty once closed)."""
        return tuple(self._sockets)

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return any(a.serving for a in self._acceptors)

    def close(self):
        """Stop accepting and close the listening sockets; open connections are not touched."""
        for acceptor in self._acceptors:
            acceptor.close()
        self._sockets = []

    async def wait_closed(self):
        """Nothing to wait for: ``close()`` closes the sockets at once."""
        return None
