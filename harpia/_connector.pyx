# cython: language_level=3
"""Client connections on harpia's own socket I/O: a socket the event loop connected
(``loop.sock_connect``) handed to a ``SocketTransport``, as the acceptor does for accepted
ones, so a client's reads go straight into the frame engine too."""
from harpia._transport cimport SocketPoller, SocketTransport, new_transport


def start_transport(loop, SocketPoller poller, sock, protocol):
    """Take over the connected, non-blocking ``sock`` (its descriptor now belongs to the
    transport), call ``protocol.connection_made`` and start reading; the transport."""
    cdef int family = sock.family
    peername = sock.getpeername()
    cdef int fd = sock.detach()
    cdef SocketTransport transport = new_transport(loop, poller, fd, family, peername, protocol)
    transport.start()
    return transport
