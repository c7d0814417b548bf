"""``python -m harpia module:app``: serve an app from the command line (uvicorn-style)."""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from typing import Any

from .app import App
from .errors import ConfigurationError


def load_app(spec: str) -> App:
    """Import ``package.module:attribute``: an App, a plain ASGI app (served mounted at
    ``/``), or a factory of either."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise SystemExit(f"harpia: expected MODULE:APP, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"harpia: cannot import {module_name!r}: {exc}") from exc
    target = getattr(module, attribute or "app", None)
    if target is None:
        raise SystemExit(f"harpia: {module_name!r} has no attribute {attribute or 'app'!r}")
    if not isinstance(target, App) and callable(target) and not is_asgi_app(target):
        target = target()
    if is_asgi_app(target):
        target = app_serving_asgi(target)
    if not isinstance(target, App):
        raise SystemExit(f"harpia: {spec!r} is not a harpia app nor an ASGI app (got {type(target).__name__})")
    return target


def is_asgi_app(target: object) -> bool:
    """True for a plain ASGI 3 app: ``async def app(scope, receive, send)``, or an object
    whose ``__call__`` is one (a FastAPI or Starlette instance)."""
    if isinstance(target, App) or not callable(target):
        return False
    call = target if inspect.isroutine(target) else type(target).__call__
    if not inspect.iscoroutinefunction(call):
        return False
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return len(parameters) == 3


def app_serving_asgi(asgi_app: Any) -> App:
    """A harpia App that is simply the server of ``asgi_app`` (mounted at ``/``)."""
    app = App()
    app.mount("/", asgi_app)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="harpia", description="Serve a harpia app.")
    parser.add_argument("app", help="MODULE:APP, e.g. examples.chat:make_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--tls-cert", help="PEM certificate chain (enables wss://)")
    parser.add_argument("--tls-key", help="PEM private key")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--pubsub", help="backplane URL for publishes across processes, "
                                          "e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--busy-poll", type=float, metavar="SECONDS",
                        help="keep the event loop polling this long after a read (lower "
                             "latency for more CPU; e.g. 0.0002)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    tls = {"cert": args.tls_cert, "key": args.tls_key} if args.tls_cert else None
    app = load_app(args.app)
    if args.pubsub:
        app.use_pubsub(args.pubsub)
    if args.busy_poll is not None:
        try:
            app.busy_poll = args.busy_poll
        except ConfigurationError as exc:
            parser.error(f"--busy-poll: {exc}")
    app.listen(host=args.host, port=args.port, tls=tls, workers=args.workers)


if __name__ == "__main__":
    main()
