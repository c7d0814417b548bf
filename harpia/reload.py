"""A worker's life under the supervisor: serve until told to stop, or to make way.

SIGINT/SIGTERM stop the worker as a single process stops (every client gets 1001).
SIGHUP is the supervisor's graceful reload: a new worker already accepts from the same
listening socket (the supervisor holds it: closing this worker's copy resets nothing, and
what is queued on it goes to the new worker), so this one

1. stops accepting;
2. lets the handshakes in progress finish (at most ``handshake_timeout``);
3. closes every client with 1012 (service restart) within ``close_timeout``.

No connection is refused: every one that reached this worker is answered.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .server import Listener, ServedApp
from .worker_metrics import WorkerMetrics

__all__ = ["serve_worker", "retire", "SERVICE_RESTART", "WorkerApp"]

logger = logging.getLogger("harpia")

#: RFC 6455 section 7.4.1 via IANA: the server is restarting; a client may reconnect.
SERVICE_RESTART = 1012


class WorkerApp(ServedApp, Protocol):
    """What a worker process needs from the app: what its listener needs, and counters."""

    worker_metrics: WorkerMetrics | None

    def stats(self) -> dict[str, Any]: ...

    def latency_snapshot(self) -> dict[str, Any] | None: ...


async def serve_worker(app: WorkerApp, host: str, port: int,
                       tls: Mapping[str, Any] | ssl.SSLContext | None, *,
                       ready: Callable[[], object] | None = None, **where: Any) -> None:
    """Serve until SIGINT/SIGTERM (close with 1001) or SIGHUP (retire with 1012).

    ``ready`` is called once the listener accepts (bound, listening, its ASGI lifespan and
    backplane started): the supervisor waits for it before counting the worker as up."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason: list[int] = []

    def on_signal(code: int) -> None:
        reason.append(code)
        stop.set()

    loop.add_signal_handler(signal.SIGINT, on_signal, 1001)
    loop.add_signal_handler(signal.SIGTERM, on_signal, 1001)
    loop.add_signal_handler(signal.SIGHUP, on_signal, SERVICE_RESTART)
    listener = await Listener(app, host=host, port=port, tls=tls, **where).start()
    if ready is not None:
        ready()
    publisher = loop.create_task(_publish_metrics(app))
    try:
        await stop.wait()
    finally:
        publisher.cancel()
        if reason and reason[0] == SERVICE_RESTART:
            logger.info("worker %d reloading: closing %d connection(s) with 1012",
                        os.getpid(), listener.connections_held())
            await retire(listener)
        else:
            await listener.stop()


async def _publish_metrics(app: WorkerApp) -> None:
    """Write this worker's counters where the other workers' scrapes read them."""
    from .worker_metrics import PUBLISH_EVERY

    metrics = app.worker_metrics
    if metrics is None:
        return
    while True:
        try:
            metrics.publish(app.stats(), app.latency_snapshot())
        except OSError as exc:   # the directory went away: the supervisor is stopping
            logger.debug("cannot publish worker metrics: %s", exc)
        await asyncio.sleep(PUBLISH_EVERY)


async def retire(listener: Listener) -> None:
    """Stop accepting from the shared socket, then close clients with 1012."""
    loop = listener.loop
    server = listener.server
    if server is not None:
        server.close()
        # asyncio hands a connection it accepted just before close() to its protocol a
        # few loop turns later; let those arrive so the wait below counts them.
        await asyncio.sleep(0.05)
    deadline = loop.time() + listener.handshake_timeout
    while listener.handshakes_in_progress() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await listener.stop(code=SERVICE_RESTART)

