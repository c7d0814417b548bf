"""Stream to clients without outrunning them: send until send() says -1, resume on drain."""
from __future__ import annotations

import itertools

from harpia import ServerWebSocket, harpia

app = harpia()
counter = itertools.count()


def pump(ws: ServerWebSocket[object]) -> None:
    # send() returns the bytes queued, -1 once the buffer passes backpressure_limit (this
    # message is still queued), 0 if it was dropped.  Stop at -1; drain() calls us again.
    while ws.readyState == 1 and ws.send(f"tick {next(counter)}") > 0:
        pass


app.ws("/high-volume", {"open": pump, "drain": pump}, backpressure_limit=256 * 1024)

if __name__ == "__main__":
    app.listen(port=3000)
