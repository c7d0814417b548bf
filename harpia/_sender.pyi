"""The send half of a connection: ``FrameSender``, the base of ``harpia._frames.FrameEngine``
(compiled with Cython).  The send API, over the output buffer and its backpressure limit."""
from collections.abc import Callable, Iterable
from typing import Literal

from _typeshed import ReadableBuffer
from typing_extensions import TypeAlias, disjoint_base

from harpia._deflate import PerMessageDeflate
from harpia._loop import LoopContext, LoopMember
from harpia._output import ByteSink

_Message: TypeAlias = str | bytes
_Event: TypeAlias = (
    tuple[Literal["message"], _Message]
    | tuple[Literal["ping"], bytes]
    | tuple[Literal["pong"], bytes]
    | tuple[Literal["close"], int, str]
    | tuple[Literal["protocol_error"], int, str]
    | tuple[Literal["handler_error"], BaseException]
    | tuple[Literal["drain"]]
)

@disjoint_base
class FrameSender(LoopMember):
    """The send half of a connection; see ``harpia._frames.FrameEngine``."""

    @property
    def client(self) -> bool:
        """True in the client role: incoming frames are unmasked, outgoing ones masked."""
    @property
    def backpressure_limit(self) -> int:
        """Output bytes buffered past which ``send`` returns -1, then drops until drained."""
    @property
    def close_on_backpressure_limit(self) -> bool:
        """Close with 1013 instead of dropping when ``backpressure_limit`` is exceeded."""
    ready_state: int
    """0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED (the module's constants)."""
    @property
    def close_code_sent(self) -> int:
        """The code of the close frame we sent (1005 if it had none); 0 before closing."""
    @property
    def close_reason_sent(self) -> str:
        """The reason in the close frame we sent; empty before closing and for an echo."""
    @property
    def dropped(self) -> int:
        """How many frames were not queued because of closing or backpressure."""
    @property
    def messages_out(self) -> int:
        """Data messages queued for the peer."""
    @property
    def bytes_out(self) -> int:
        """Bytes queued for the peer (frames, headers included)."""
    @property
    def backpressure_events(self) -> int:
        """Sends that took the buffer over backpressure_limit."""
    transport_buffered: int
    """Bytes the transport still holds (reported by ``pause_output``/``resume_output``)."""
    @property
    def compression(self) -> PerMessageDeflate | None:
        """The ``harpia._deflate.PerMessageDeflate`` state once ``enable_deflate`` ran, else None."""

    def drained(self) -> None:
        """The output buffer fell back to a quarter of ``backpressure_limit``: send again."""
    def set_reading(self, reading: bool) -> None:
        """Pause (False) or resume (True) reading from the transport."""
    def closing_started(self) -> None:
        """A close frame was just queued (ours or the echo): start the close timeout."""

    def attach(
        self,
        writer: Callable[[bytes], object] | None,
        loop: LoopContext | None = None,
        writelines: Callable[[Iterable[bytes]], object] | None = None,
        buffer_size: Callable[[], int] | None = None,
        sink: ByteSink | None = None,
    ) -> None:
        """Hand output to ``writer``, batched per loop turn by ``loop``; ``writelines`` avoids
        copies of large payloads, ``buffer_size()`` reports what the transport still holds.
        A ``sink`` (``harpia._transport.SocketTransport``) takes the place of all three: the
        output goes to it at C level."""
    def send(self, message: str | ReadableBuffer, compress: bool | None = None) -> int:
        """Queue ``str`` as text, bytes-like as binary: frame size, -1 if now over the limit, 0 if dropped.

        ``compress`` (permessage-deflate only): None compresses messages of at least
        ``compress_threshold`` bytes, True always, False never.
        """
    def send_text(self, message: str) -> int:
        """Queue a text message; returns as ``send``."""
    def send_binary(self, message: ReadableBuffer) -> int:
        """Queue a binary message; returns as ``send``."""
    def send_frame(
        self, opcode: int, payload: ReadableBuffer, *, fin: bool = True, rsv1: bool = False
    ) -> int:
        """Queue one raw frame (fragments, control frames) without protocol checks and past
        the backpressure limit (an opcode outside 0-15 is a ValueError); returns the payload
        size, or 0 once closing."""
    def ping(self, data: str | ReadableBuffer = b"") -> int:
        """Queue a ping (payload at most 125 bytes, else ValueError); returns as ``send``."""
    def pong(self, data: str | ReadableBuffer = b"") -> int:
        """Queue an unsolicited pong (payload at most 125 bytes); returns as ``send``."""
    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (ValueError for a code that may not be sent or a
        reason over 123 bytes)."""
    def data_to_send(self) -> bytes:
        """Take the bytes queued for the peer (sans-I/O use, when no writer is attached)."""
    def events_received(self) -> list[_Event]:
        """Take the events recorded by the default hooks since the last call."""
    def flush_output(self) -> None:
        """Write what is queued now instead of at the end of the loop turn."""
    def pause_output(self, transport_buffered: int) -> None:
        """The transport's buffer is full: hold frames here until ``resume_output``."""
    def resume_output(self, transport_buffered: int) -> None:
        """The transport drained to ``transport_buffered`` bytes: write what is held."""

    @property
    def buffered_amount(self) -> int:
        """Bytes queued and not yet accepted by the kernel, as far as the engine knows."""
    @property
    def reading_paused(self) -> bool:
        """True while reading is paused (output over the limit or input held)."""
