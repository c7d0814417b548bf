"""harpia's frame engine: RFC 6455 framing, sans-I/O (compiled with Cython).

Bytes go in through ``FrameEngine.feed``; messages come out through the bound message
handler (or ``events_received()``); frames to send collect in an output buffer written to
the attached writer once per event-loop turn (or taken with ``data_to_send()``).
"""
from collections.abc import Callable
from typing import Any, Final, Literal, overload

from _typeshed import ReadableBuffer
from typing_extensions import Self, disjoint_base

from harpia._frame_tools import apply_mask as apply_mask
from harpia._frame_tools import serialize_frame as serialize_frame
from harpia._frame_tools import unmask_inplace as unmask_inplace
from harpia._frame_tools import utf8_valid as utf8_valid
from harpia._sender import FrameSender, _Message
from harpia._wire import is_valid_close_code as is_valid_close_code

CONNECTING: Final = 0
"""``ready_state`` before the opening handshake completed (never set by the engine itself)."""
OPEN: Final = 1
"""``ready_state`` while messages flow both ways."""
CLOSING: Final = 2
"""``ready_state`` once a close frame has been sent and the peer's is awaited."""
CLOSED: Final = 3
"""``ready_state`` once the closing handshake is complete or the transport is gone."""


def set_clock(seconds: int) -> None:
    """Set the coarse clock (whole seconds, 0 to 2**32 - 1) that ``last_seen`` is stamped with."""

@disjoint_base
class FrameEngine(FrameSender):
    """One WebSocket connection's protocol state: the parser here, the send side inherited.

    ``client=False`` is the server role (incoming frames must be masked, outgoing are not);
    ``client=True`` the reverse.  Limits are checked when a frame header arrives, before any
    payload is buffered.  Subclasses override the hook methods to receive events.
    """

    @property
    def max_payload_length(self) -> int:
        """Largest message accepted, in bytes, summed over its fragments; more fails with 1009."""
    @property
    def inbound_limit(self) -> int:
        """Input bytes held behind a running async handler past which reading pauses."""
    @property
    def close_code_received(self) -> int:
        """The code of the peer's close frame (1005 if it had none); 0 before one arrived."""
    @property
    def close_reason_received(self) -> str:
        """The reason in the peer's close frame; empty before one arrived."""
    #: Called with a sampled message handler duration in nanoseconds (latency
    #: histograms); None: not timed.
    handler_timer: Callable[[int], object] | None
    @property
    def messages_in(self) -> int:
        """Messages delivered from the peer."""
    @property
    def bytes_in(self) -> int:
        """Bytes received (the wire, headers included)."""
    last_seen: int
    """The ``set_clock`` time of the last ``feed``; the idle sweeper compares it."""
    def __init__(
        self,
        *,
        client: bool = False,
        max_payload_length: int = ...,
        backpressure_limit: int = ...,
        close_on_backpressure_limit: bool = False,
        inbound_limit: int = ...,
    ) -> None:
        """Defaults: 16 MiB messages, 1 MiB of output backpressure, 64 KiB of held input."""

    # Hooks: the defaults record events for events_received(); adapters override them.
    def ping_received(self, payload: bytes) -> None:
        """A ping arrived (the pong is already queued)."""
    def pong_received(self, payload: bytes) -> None:
        """A pong arrived."""
    def close_received(self, code: int, reason: str) -> None:
        """The peer's close frame arrived (the echo is already queued); input has ended."""
    def protocol_failed(self, code: int, reason: str) -> None:
        """The peer broke the protocol; a close frame with ``code`` is queued, input has ended."""
    def handler_failed(self, exc: BaseException) -> None:
        """The message handler (or a writer) raised ``exc``; the connection is untouched."""
    def start_async(self, awaitable: Any) -> bool:
        """Run an async handler's awaitable; True if still pending (delivery then pauses)."""
    # Input.
    def feed(self, data: ReadableBuffer) -> None:
        """Parse ``data``; deliver every complete message; then write the output once."""
    def data_received(self, data: ReadableBuffer) -> None:
        """``feed``, under the name asyncio protocols use."""
    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        """Where the next read goes (asyncio.BufferedProtocol): the loop's shared area, or
        the message itself in the middle of a large frame."""
    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` landed in the area ``get_buffer`` returned: parse them, as ``feed``."""
    def pause_delivery(self) -> None:
        """Hold incoming messages (the bytes, bounded by ``inbound_limit``) until ``resume_delivery``."""
    def resume_delivery(self) -> None:
        """An async handler finished: parse the input held meanwhile."""

    # Configuration.
    @overload
    def bind_message_handler(
        self, handler: Callable[[Self, _Message], object], arity: Literal[2] = 2,
        is_async: bool = False,
    ) -> None:
        """Deliver messages as ``handler(engine, message)``; ``None`` records them as events."""
    @overload
    def bind_message_handler(
        self, handler: Callable[[Self], object], arity: Literal[1], is_async: bool = False
    ) -> None: ...
    @overload
    def bind_message_handler(
        self, handler: Callable[[], object], arity: Literal[0], is_async: bool = False
    ) -> None: ...
    @overload
    def bind_message_handler(
        self, handler: Callable[..., object] | None, arity: int = 2, is_async: bool = False
    ) -> None: ...
    def enable_deflate(
        self,
        *,
        local_no_context_takeover: bool = True,
        remote_no_context_takeover: bool = True,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        compression_level: int = 6,
        memory_level: int = 8,
        compress_threshold: int = 0,
        max_inflated_length: int = -1,
        max_compression_ratio: int = 0,
    ) -> None:
        """Turn on permessage-deflate (RFC 7692) with the negotiated parameters (``local_*``: what we send).

        ``max_inflated_length``: largest inflated message, if lower than
        ``max_payload_length`` (-1: none of its own); ``max_compression_ratio``: past 1 MiB
        inflated, a message may inflate to at most that many times its compressed bytes
        (0: no cap).  Both close with 1009."""
    def detach(self) -> None:
        """The transport is gone: drop queued output and input, write nothing more (CLOSED)."""

    @property
    def is_input_closed(self) -> bool:
        """True once nothing more will be parsed (close received, protocol error, detached)."""
    @property
    def held_bytes(self) -> int:
        """Input bytes held while an async message handler runs."""
