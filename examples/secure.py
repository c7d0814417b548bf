"""Authenticate in the upgrade hook; serve over TLS when given a key and a certificate.

python examples/secure.py --cert cert.pem --key key.pem
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from harpia import Reject, Request, ServerWebSocket, harpia

TOKENS = {"s3cret": "alice"}


@dataclass
class Session:
    user: str


def upgrade(request: Request) -> Session:
    user = TOKENS.get(request.query.get("token", ""))
    if user is None:
        raise Reject(401, "a valid ?token= is required")
    return Session(user)


def on_open(ws: ServerWebSocket[Session]) -> None:
    ws.send(f"hello {ws.data.user}")


app = harpia()
app.ws("/secure", {"open": on_open}, upgrade=upgrade)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    tls = {"cert": args.cert, "key": args.key} if args.cert and args.key else None
    app.listen(port=args.port, tls=tls)
