"""``SocketTransport``: a plain TCP or Unix stream socket that harpia reads and writes
itself, the event loop only saying when it is readable or writable (compiled with Cython).

The part of ``asyncio.Transport`` harpia's protocols use, with asyncio's semantics; made by
``harpia._acceptor.SocketAcceptor`` for each accepted connection."""
from typing import Any, final

from _typeshed import ReadableBuffer
from collections.abc import Iterable

@final
class SocketPoller:
    """The epoll set of one listener's connections, watched by the loop as one reader."""

    def __new__(cls, loop: Any) -> SocketPoller: ...
    def retire(self) -> None:
        """The listener stopped accepting: stop watching once no socket is left."""

@final
class SocketTransport:
    """The transport of one accepted plain TCP or Unix socket (it owns the descriptor)."""

    def set_protocol(self, protocol: Any) -> None:
        """Deliver what is read to ``protocol`` from now on (the frame engine at C level)."""
    def get_protocol(self) -> Any:
        """The protocol reads are delivered to."""
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername`` (from accept), ``sockname``, ``socket``; ``default`` for anything else."""
    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the connection was lost."""
    def is_reading(self) -> bool:
        """True unless reading is paused or the transport is closing."""
    def pause_reading(self) -> None:
        """Stop reading until ``resume_reading()``."""
    def resume_reading(self) -> None:
        """Read again after ``pause_reading()``."""
    def write(self, data: ReadableBuffer) -> None:
        """Send now what the kernel takes; keep the rest and send it when writable."""
    def writelines(self, list_of_data: Iterable[ReadableBuffer]) -> None:
        """``write`` each item in turn."""
    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet taken by the kernel."""
    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``: the protocol is paused above ``high``, resumed at ``low``."""
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the marks, as ``asyncio.WriteTransport.set_write_buffer_limits``."""
    def can_write_eof(self) -> bool:
        """True: a plain socket can be half-closed."""
    def write_eof(self) -> None:
        """Shut down the sending side once what is buffered has gone."""
    def close(self) -> None:
        """Stop reading, send what is buffered, then close (``connection_lost(None)``)."""
    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
