"""``LogThrottle``: at most one warning per interval for an event a client can repeat."""
from __future__ import annotations

import logging
import time

__all__ = ["LogThrottle"]

logger = logging.getLogger("harpia")


class LogThrottle:
    """One warning per ``every`` seconds for an event a hostile client can cause thousands
    of times a second; the next warning says how many were left out meanwhile."""

    __slots__ = ("every", "_logged_at", "_suppressed")

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._logged_at: float | None = None
        self._suppressed = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self.every:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d more since the last report)"
            args += (self._suppressed,)
        logger.warning(message, *args)
        self._logged_at = now
        self._suppressed = 0
