"""``SocketAcceptor``: accepts on a listening plain TCP or Unix socket in batches and starts
a ``harpia._transport.SocketTransport`` per connection; ``AcceptingServer`` shows a set of
them as ``asyncio.Server`` would (compiled with Cython)."""
import asyncio
import socket
from collections.abc import Callable, Iterable
from typing import Any

from typing_extensions import disjoint_base

from harpia._transport import SocketPoller

ACCEPT_RETRY_DELAY: float
"""Seconds before accepting again after running out of descriptors or memory."""

@disjoint_base
class SocketAcceptor:
    """Accepts connections on one listening socket for ``protocol_factory``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol_factory: Callable[[], Any], on_error: Callable[[int], object],
                 poller: SocketPoller | None = None) -> None:
        """``on_error(errno)`` hears of failed accepts (out of descriptors, say); the
        connections are watched by ``poller`` (a new one by default)."""
    @property
    def serving(self) -> bool:
        """True between ``start()`` and ``close()``."""
    def start(self) -> None:
        """Start accepting."""
    def close(self) -> None:
        """Stop accepting and close the listening socket."""

class AcceptingServer:
    """The listening sockets of a listener that accepts itself, as ``asyncio.Server``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: Iterable[socket.socket],
                 protocol_factory: Callable[[], Any], on_error: Callable[[int], object]) -> None: ...
    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (empty once closed)."""
    def get_loop(self) -> asyncio.AbstractEventLoop: ...
    def is_serving(self) -> bool: ...
    def close(self) -> None:
        """Stop accepting and close the listening sockets; open connections stay."""
    async def wait_closed(self) -> None:
        """Nothing to wait for: ``close()`` closes the sockets at once."""
