"""``python -m harpia module:app``: serve an app from the command line (uvicorn-style).

The command binds 127.0.0.1 unless ``--host`` says otherwise (``app.listen()`` binds
0.0.0.0): serving every interface is a decision, not a default.  Mistakes made here — a
module that does not import, a misspelt handler, a port already taken, a module that calls
``app.listen()`` at import — end with one line on stderr and a non-zero exit status, not a
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from typing import Any, NoReturn

from .app import App
from .errors import ConfigurationError, HarpiaError


class ListenAtImport(Exception):
    """``App.listen`` was called while the command line imported the user's module."""


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"harpia: {message}")


def _import(module_name: str) -> Any:
    # A module that ends with `app.listen(port=3000)` would block inside the import, serve
    # on its own host and port, and after Ctrl-C the command would serve a second time with
    # ours. While importing, listen() raises instead, naming the line that called it.
    original = App.listen

    def listen_at_import(self: App, *args: Any, **kwargs: Any) -> None:
        caller = sys._getframe(1)
        raise ListenAtImport(f"{caller.f_code.co_filename}:{caller.f_lineno}")

    setattr(App, "listen", listen_at_import)
    try:
        return importlib.import_module(module_name)
    except ListenAtImport as exc:
        _fail(f"{exc} calls app.listen() while {module_name!r} is being imported; put that "
              f"call under `if __name__ == \"__main__\":` so that `python -m harpia` serves "
              f"the app with its own --host and --port")
    except ImportError as exc:
        _fail(f"cannot import {module_name!r}: {exc}")
    except HarpiaError as exc:
        _fail(f"{module_name}: {exc}")
    finally:
        setattr(App, "listen", original)


def load_app(spec: str) -> App:
    """Import ``package.module:attribute``: an App, a plain ASGI app (served mounted at
    ``/``), or a factory of either."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        _fail(f"expected MODULE:APP, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    target = getattr(module, attribute or "app", None)
    if target is None:
        _fail(f"{module_name!r} has no attribute {attribute or 'app'!r}")
    if not isinstance(target, App) and callable(target) and not is_asgi_app(target):
        try:
            target = target()
        except HarpiaError as exc:
            _fail(f"{spec}: {exc}")
    if is_asgi_app(target):
        target = app_serving_asgi(target)
    if not isinstance(target, App):
        _fail(f"{spec!r} is not a harpia app nor an ASGI app (got {type(target).__name__})")
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
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; "
                             "0.0.0.0 for every interface, which app.listen() binds)")
    parser.add_argument("--port", type=int, default=3000, help="default 3000; 0 picks a free one")
    parser.add_argument("--tls-cert", help="PEM certificate chain (enables wss://)")
    parser.add_argument("--tls-key", help="PEM private key")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--pubsub", help="backplane URL for publishes across processes, "
                                          "e.g. redis://127.0.0.1:6379/0, "
                                          "redis+cluster://10.0.0.1:7000,10.0.0.2:7000 or "
                                          "redis+sentinel://10.0.0.1:26379/mymaster")
    parser.add_argument("--busy-poll", type=float, metavar="SECONDS",
                        help="keep the event loop polling this long after a read (lower "
                             "latency for more CPU; e.g. 0.0002)")
    # Where to listen, besides --host/--port, and who to believe about the client's address.
    parser.add_argument("--uds", metavar="PATH", help="serve on a Unix domain socket")
    parser.add_argument("--fd", type=int, metavar="N",
                        help="serve on the listening socket inherited as descriptor N "
                             "(systemd socket activation, LISTEN_FDS, is picked up by itself)")
    parser.add_argument("--proxy-protocol", action="store_true",
                        help="every connection starts with a PROXY protocol v1/v2 header")
    parser.add_argument("--forwarded-allow-ips", metavar="LIST",
                        help="comma-separated addresses/networks whose X-Forwarded-For and "
                             "Forwarded headers are believed ('*' for any)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    tls = {"cert": args.tls_cert, "key": args.tls_key} if args.tls_cert else None
    app = load_app(args.app)
    try:
        if args.pubsub:
            app.use_pubsub(args.pubsub)
    except HarpiaError as exc:
        parser.error(f"--pubsub: {exc}")
    if args.busy_poll is not None:
        try:
            app.busy_poll = args.busy_poll
        except ConfigurationError as exc:
            parser.error(f"--busy-poll: {exc}")
    where = listen_where(parser, args)
    try:
        app.listen(host=args.host, port=args.port, tls=tls, workers=args.workers, **where)
    except HarpiaError as exc:
        _fail(str(exc))
    except OSError as exc:  # the port is taken, the address is not ours, a TLS file is missing
        _fail(f"cannot serve on {args.host}:{args.port}: {exc}")


def listen_where(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The socket and proxy options of ``listen`` from --uds, --fd, LISTEN_FDS and friends."""
    from .sockets import inherited_socket, systemd_sockets

    where: dict[str, Any] = {"proxy_protocol": args.proxy_protocol}
    if args.forwarded_allow_ips:
        where["forwarded_allow_ips"] = [p.strip() for p in args.forwarded_allow_ips.split(",")]
    try:
        activated = systemd_sockets() if args.fd is None else []
        if args.fd is not None:
            where["sock"] = inherited_socket(args.fd)
        elif activated:
            if len(activated) > 1:
                parser.error(f"systemd passed {len(activated)} sockets; harpia serves one")
            where["sock"] = activated[0]
    except ConfigurationError as exc:
        parser.error(str(exc))
    if args.uds:
        if "sock" in where:
            parser.error("--uds and an inherited socket (--fd, LISTEN_FDS) exclude each other")
        where["unix"] = args.uds
    return where


if __name__ == "__main__":
    main()
