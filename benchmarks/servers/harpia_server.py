"""harpia benchmark server: /echo echoes every message, /broadcast relays every
message to every connected /broadcast client (sender included, via the "all"
topic).  --deflate: permessage-deflate on both, with harpia's defaults.
--busy-poll SECONDS: keep the loop polling that long after a read (default off).
--no-latency-histograms: without the upgrade/handler/publish histograms (on by default).
--loop-transport: the event loop's transports do the socket I/O instead of harpia's own.

    python harpia_server.py --port 9001 [--deflate] [--busy-poll 0.0002]
"""
import argparse

from harpia import harpia

MAX_PAYLOAD = 64 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--busy-poll", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--no-latency-histograms", action="store_true")
    parser.add_argument("--loop-transport", action="store_true")
    args = parser.parse_args()
    port, deflate = args.port, args.deflate

    app = harpia(busy_poll=args.busy_poll, latency_histograms=not args.no_latency_histograms,
                 loop_transport=args.loop_transport)
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
