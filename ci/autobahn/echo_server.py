"""Echo server for the Autobahn|Testsuite fuzzing client (see ci/autobahn/run).

Uses only harpia's public API: every message is sent back as received (text as text,
binary as binary). Blocks until SIGINT/SIGTERM.

    python3 ci/autobahn/echo_server.py --port 9001 [--host 127.0.0.1] [--deflate]
"""

from __future__ import annotations

import argparse
from typing import Protocol

from harpia import harpia

# Section 9 sends messages of up to 16 MiB; leave room for framing.
MAX_PAYLOAD_LENGTH = 16 * 1024 * 1024 + 1024
# The suite must never see a connection closed for idleness (section 9 cases run for seconds).
IDLE_TIMEOUT = 600


class _Sender(Protocol):
    def send(self, message: str | bytes, /) -> object: ...


def on_message(ws: _Sender, message: str | bytes) -> None:
    ws.send(message)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument(
        "--deflate", action="store_true", help="enable permessage-deflate (sections 12 and 13)"
    )
    args = parser.parse_args(argv)

    app = harpia()
    app.ws(
        "/",
        {"message": on_message},
        max_payload_length=MAX_PAYLOAD_LENGTH,
        idle_timeout=IDLE_TIMEOUT,
        per_message_deflate=args.deflate,
    )
    app.listen(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
