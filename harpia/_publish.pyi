"""Publish: one message to many connections, serialized once (compiled with Cython)."""
from _typeshed import ReadableBuffer

from harpia._frames import FrameEngine

def publish(
    subscribers: tuple[FrameEngine, ...],
    message: str | ReadableBuffer,
    exclude: FrameEngine | None = None,
    compress: bool | None = None,
) -> int:
    """Serialize ``message`` once and queue it on every subscriber but ``exclude``; how many took it."""

def publish_serialized(
    subscribers: tuple[FrameEngine, ...], frame: bytes, exclude: FrameEngine | None = None
) -> int:
    """Queue an already serialized server frame on every subscriber but ``exclude``; how many took it.

    A whole text or binary frame is compressed for permessage-deflate subscribers, once per group.
    """
