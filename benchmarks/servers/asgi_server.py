"""Serve one of asgi_targets' apps with harpia, uvicorn or granian, on 127.0.0.1.

    asgi_server.py --server harpia|harpia-native|uvicorn|granian --app api|hello --port P

harpia mounts the app at "/" beside a native echo route on /native (harpia-native: the
native route alone, no mount: the baseline for what a mount costs the native path).
uvicorn runs with httptools and uvloop and its default WebSocket implementation;
granian with its ASGI interface, HTTP/1 and one worker.  All stop on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True,
                        choices=["harpia", "harpia-native", "uvicorn", "granian"])
    parser.add_argument("--app", default="api", choices=["api", "hello"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import asgi_targets

    target = getattr(asgi_targets, args.app)
    if args.server in ("harpia", "harpia-native"):
        import logging

        from harpia import harpia

        logging.basicConfig(level=logging.WARNING)
        app = harpia()
        app.ws("/native", {"message": lambda ws, message: ws.send(message)})
        if args.server == "harpia":
            app.mount("/", target)
        app.listen(host="127.0.0.1", port=args.port)
    elif args.server == "uvicorn":
        import uvicorn

        uvicorn.run(target, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                    log_level="warning", access_log=False)
    else:
        os.execvp(sys.executable, [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(args.port), "--workers", "1", "--http", "1", "--loop", "uvloop",
            "--no-log", "--working-dir", os.path.dirname(os.path.abspath(__file__)),
            f"asgi_targets:{args.app}"])


if __name__ == "__main__":
    main()
