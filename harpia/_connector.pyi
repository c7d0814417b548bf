"""Client connections on harpia's own socket I/O (compiled with Cython)."""
from typing import Any

from ._transport import SocketPoller, SocketTransport

def connect_transport(loop: Any, poller: SocketPoller, host: str, port: int,
                      protocol: Any) -> SocketTransport | None:
    """Start a TCP connection to ``host`` (an IPv4 or IPv6 address literal) and ``port``;
    the transport, ``protocol.connection_made`` called and reading started.  ``None`` when
    ``host`` is not an address literal (a name to resolve, an IPv6 zone).  ``OSError``
    when the connect fails at once; later failures reach ``protocol.connection_lost``."""
