"""Client connections on harpia's own socket I/O (compiled with Cython)."""
import socket
from typing import Any

from ._transport import SocketPoller, SocketTransport

def start_transport(loop: Any, poller: SocketPoller, sock: socket.socket,
                    protocol: Any) -> SocketTransport:
    """Take over the connected, non-blocking ``sock`` (its descriptor now belongs to the
    transport), call ``protocol.connection_made`` and start reading; the transport."""
