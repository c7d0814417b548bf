"""harpia benchmark server: /echo echoes every message, /broadcast relays every
message to every connected /broadcast client (sender included, via the "all"
topic).  --deflate: permessage-deflate on both, with harpia's defaults.

    python harpia_server.py --port 9001 [--deflate]
"""
import argparse

from harpia import harpia

MAX_PAYLOAD = 64 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    port, deflate = args.port, args.deflate

    app = harpia()
    app.ws("/echo", {"message": lambda ws, message: ws.send(message)}, max_payload_length=MAX_PAYLOAD,
           per_message_deflate=deflate)
    app.ws(
        "/broadcast",
        {
            "open": lambda ws: ws.subscribe("all"),
            "message": lambda ws, message: app.publish("all", message),
        },
        max_payload_length=MAX_PAYLOAD,
        per_message_deflate=deflate,
    )
    app.listen(host="127.0.0.1", port=port)  # blocks (uvloop) until SIGINT/SIGTERM


if __name__ == "__main__":
    main()
