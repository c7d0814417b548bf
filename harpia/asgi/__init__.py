"""Serving ASGI apps (FastAPI, Starlette) beside harpia's own routes: ``app.mount``.

    from fastapi import FastAPI
    from harpia import harpia

    api = FastAPI()
    app = harpia()
    app.mount("/", api)          # every request no harpia route takes goes to the ASGI app

``connection(websocket.scope)`` is the harpia connection behind an accepted ASGI WebSocket
(to ``subscribe`` and ``publish`` on harpia's topics).
"""
from __future__ import annotations

from .mount import AsgiApp, AsgiMounts
from .options import HttpOptions
from .websocket import connection

__all__ = ["AsgiApp", "HttpOptions", "connection"]
