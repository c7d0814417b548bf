"""Single frames and byte strings, outside any connection (compiled with Cython)."""
from _typeshed import ReadableBuffer, WriteableBuffer

def serialize_frame(
    opcode: int,
    payload: str | ReadableBuffer,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: ReadableBuffer | None = None,
) -> bytes:
    """One frame as bytes: unmasked, or masked with the 4-byte ``mask``."""

def apply_mask(data: ReadableBuffer, mask: ReadableBuffer, phase: int = 0) -> bytes:
    """``data`` XORed with the 4-byte ``mask``, starting ``phase`` bytes into it, as new bytes."""

def unmask_inplace(buffer: WriteableBuffer, mask: ReadableBuffer, phase: int = 0) -> None:
    """XOR a writable buffer with the 4-byte ``mask`` in place, starting ``phase`` bytes into it."""

def utf8_valid(data: ReadableBuffer) -> bool:
    """True if ``data`` is complete, valid UTF-8 (the check text messages go through)."""
