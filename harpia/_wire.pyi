"""The RFC 6455 wire format: opcodes, close codes and ready states (compiled with Cython)."""
from enum import IntEnum

class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 section 5.2)."""
    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10

class CloseCode(IntEnum):
    """Close codes (RFC 6455 section 7.4.1 and the IANA registry)."""
    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014

class ReadyState(IntEnum):
    """A connection's ``ready_state``, as in the browser API."""
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3

def is_valid_close_code(code: int) -> bool:
    """True if ``code`` may be sent or received in a close frame (1000-1003, 1007-1014, 3000-4999)."""
