"""``EngineProtocol``: the frame engine as an asyncio protocol on a transport.

What a server connection (``ServerWebSocket``) and a client connection
(``ClientWebSocket``) share once the opening handshake is over: the user-facing parts of
the send/close surface that depend on the transport (``buffered_amount``, ``terminate``,
``readyState``), the flow-control hooks between engine and transport, and the running of
handlers outside the per-message path (async handlers as tasks, failures routed to the
``error`` handler or the log).  Each subclass says where its handlers and its event loop
come from; the rest of the engine's hooks (ping, close, protocol errors) differ between
the roles and stay in the subclasses.
"""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any

from ._frames import FrameEngine
from ._loop import LoopContext
from ._transport import SocketTransport
from .handlers import RouteHandlers

__all__ = ["EngineProtocol"]

_EAGER = sys.version_info >= (3, 12)


class EngineProtocol(FrameEngine, asyncio.BufferedProtocol):
    """A ``FrameEngine`` bound to an asyncio transport (``transport`` is set by the subclass)."""

    __slots__ = ("transport",)

    #: The asyncio transport (a client's is None until its handshake has succeeded).
    transport: Any

    # ------------------------------------------------------------------ what subclasses give

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this connection runs on (for tasks of async handlers)."""
        raise NotImplementedError

    def _bound_handlers(self) -> RouteHandlers:
        """The handlers of this connection."""
        raise NotImplementedError

    def _unhandled(self, exc: BaseException) -> None:
        """A handler failed and no ``error`` handler took it: log and close with 1011."""
        raise NotImplementedError

    def attach_transport(self, transport: asyncio.Transport, cork: LoopContext | None) -> None:
        """Send through ``transport``, batched per loop turn by ``cork``."""
        if isinstance(transport, SocketTransport):
            self.attach(None, cork, sink=transport)    # harpia's own socket: at C level
            return
        # No writelines: on Python 3.12.0-3.12.8 and 3.13.0-3.13.1, asyncio's socket
        # transport queues what writelines() gets without calling pause_writing, so the
        # backpressure limit would never be seen; two write()s cost no copy either.
        self.attach(transport.write, cork, None, transport.get_write_buffer_size)

    # ------------------------------------------------------------------ user API

    @property
    def readyState(self) -> int:  # noqa: N802 - the browser's and Bun's spelling
        """0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED."""
        return self.ready_state

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for the peer and not yet taken by the kernel."""
        transport = self.transport
        pending = super().buffered_amount - self.transport_buffered
        if transport is None or transport.is_closing():
            return int(pending)
        return int(pending + transport.get_write_buffer_size())

    def terminate(self) -> None:
        """Drop the connection at once, without a closing handshake (close code 1006)."""
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ engine hooks

    def handler_failed(self, exc: BaseException) -> None:
        handler = self._bound_handlers().error
        if handler is not None:
            try:
                result = handler(self, exc)
                if handler.is_async:
                    # Its own failure must not come back to it (that would never end).
                    task = self._event_loop().create_task(result)
                    task.add_done_callback(self._error_handler_done)
                return
            except Exception as second:
                exc = second
        self._unhandled(exc)

    def start_async(self, awaitable: Awaitable[Any]) -> bool:
        return not self._spawn(awaitable, resume=True).done()

    def set_reading(self, reading: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if reading:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # ------------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        # The handshake hands over an established transport with set_protocol().
        pass

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.pause_output(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self.resume_output(self.transport.get_write_buffer_size())

    # ------------------------------------------------------------------ running handlers

    def _call(self, handler: Any, *args: Any) -> None:
        """Call a handler outside the message path; async ones run as tasks."""
        try:
            result = handler(*args)
            if handler.is_async:
                self._spawn(result)
        except Exception as exc:
            self.handler_failed(exc)

    def _spawn(self, awaitable: Awaitable[Any], resume: bool = False) -> asyncio.Task[Any]:
        """Run an async handler's awaitable; with ``resume``, delivery resumes when it ends."""
        loop = self._event_loop()
        task: asyncio.Task[Any]
        if _EAGER:
            task = asyncio.Task(awaitable, loop=loop, eager_start=True)  # type: ignore[call-arg, arg-type, unused-ignore]
        else:
            task = loop.create_task(awaitable)  # type: ignore[arg-type]
        if task.done():
            self._async_done(task, False)
        else:
            task.add_done_callback(self._resume_after if resume else self._report_after)
        return task

    def _resume_after(self, task: asyncio.Task[Any]) -> None:
        self._async_done(task, True)

    def _report_after(self, task: asyncio.Task[Any]) -> None:
        self._async_done(task, False)

    def _async_done(self, task: asyncio.Task[Any], resume: bool) -> None:
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, Exception):
            self.handler_failed(exc)
        if resume:
            self.resume_delivery()

    def _error_handler_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            exc = task.exception()
            if isinstance(exc, Exception):
                self._unhandled(exc)
