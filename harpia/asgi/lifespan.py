"""The ASGI lifespan protocol: ``startup`` before the first request, ``shutdown`` after the last.

It runs once per serving process (each worker runs its own), when the first listener of the
app starts, and shuts down when the last one stops.  An app that does not speak lifespan
(it raises on the ``lifespan`` scope before receiving anything) is served without it, as
uvicorn's default does; a ``lifespan.startup.failed`` or an exception during startup stops
the server with a ``LifespanError``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import LifespanError

__all__ = ["Lifespan"]

logger = logging.getLogger("harpia")

_ASGI = {"version": "3.0", "spec_version": "2.0"}


class Lifespan:
    """One ASGI app's lifespan task and the ``state`` it shares with every request scope."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name
        self.state: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self.unsupported = False
        self._inbox: asyncio.Queue[dict[str, Any]] | None = None
        self._reply: asyncio.Future[dict[str, Any]] | None = None
        self._received_any = False
        self._shutting_down = False

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self.state.clear()
        self.unsupported = False
        self._received_any = False
        self._shutting_down = False
        self._reply = loop.create_future()
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        self.task = loop.create_task(self._main(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply
        if reply["type"] == "lifespan.startup.failed":
            await self._finish()
            raise LifespanError(f"the ASGI app at {self.name} failed to start: "
                                f"{reply.get('message') or 'lifespan.startup.failed'}")

    async def shutdown(self) -> None:
        if self.task is None or self.unsupported or self.task.done() or self._inbox is None:
            await self._finish()
            return
        self._reply = asyncio.get_running_loop().create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        reply = await self._reply
        await self._finish()
        if reply["type"] == "lifespan.shutdown.failed":
            logger.error("the ASGI app at %s failed to shut down: %s", self.name,
                         reply.get("message") or "lifespan.shutdown.failed")

    async def _finish(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not self._received_any:
                # Not an app that speaks lifespan: serve it without.
                self.unsupported = True
                logger.info("the ASGI app at %s does not support lifespan (%s: %s)",
                            self.name, type(exc).__name__, exc)
                self._answer({"type": "lifespan.startup.complete"})
                return
            logger.error("error in the lifespan of the ASGI app at %s", self.name, exc_info=exc)
            self._answer({"type": "lifespan.startup.failed",
                          "message": f"{type(exc).__name__}: {exc}"}, failure=True)
            return
        # Returned without a word (an app that ignores scopes it does not know, as the
        # spec allows): nothing to start or stop.
        self.unsupported = not self._received_any
        self._answer({"type": "lifespan.shutdown.complete" if self._shutting_down
                      else "lifespan.startup.complete"})

    def _answer(self, message: dict[str, Any], failure: bool = False) -> None:
        reply = self._reply
        if reply is not None and not reply.done():
            if failure and self._shutting_down:
                message = {"type": "lifespan.shutdown.failed", "message": message.get("message")}
            reply.set_result(message)

    async def _receive(self) -> dict[str, Any]:
        assert self._inbox is not None
        message = await self._inbox.get()
        self._received_any = True
        if message["type"] == "lifespan.shutdown":
            self._shutting_down = True
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in ("lifespan.startup.complete", "lifespan.startup.failed",
                        "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        reply = self._reply
        if reply is not None and not reply.done():
            reply.set_result(message)
