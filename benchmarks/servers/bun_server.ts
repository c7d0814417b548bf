// Bun benchmark server (Bun.serve, uWebSockets underneath): /echo echoes every
// message with its type, /broadcast relays every message to every connected
// /broadcast client (sender included: server.publish, unlike ws.publish, does
// not skip the sender), /feed?size=N sends N-byte binary messages to the client as
// fast as it takes them (until backpressure, again on drain).  --deflate: permessage-deflate, every message sent
// compressed (Bun only compresses a send that asks for it).
//
//     bun bun_server.ts --port 9001 [--deflate]

const args = Bun.argv.slice(2);
const portAt = args.indexOf("--port");
const port = portAt >= 0 ? Number(args[portAt + 1]) : NaN;
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: bun bun_server.ts --port N [--deflate]");
  process.exit(2);
}
const deflate = args.includes("--deflate");

const ECHO = 0;
const BROADCAST = 1;
// A /feed connection's data is -size.
const feedPayloads = new Map<number, Uint8Array>();
function pump(ws: { data: number; send(m: Uint8Array): number }): void {
  const size = -ws.data;
  let payload = feedPayloads.get(size);
  if (payload === undefined) {
    payload = new Uint8Array(size).fill(120);
    feedPayloads.set(size, payload);
  }
  while (ws.send(payload) > 0) {}
}

const server = Bun.serve<number, {}>({
  hostname: "127.0.0.1",
  port,
  development: false,
  // Static routes are matched natively, before any JS runs.
  routes: {
    "/echo": (req, server) =>
      server.upgrade(req, { data: ECHO }) ? undefined : new Response("upgrade failed", { status: 400 }),
    "/feed": (req, server) => {
      const size = Number(new URL(req.url).searchParams.get("size") ?? "32");
      if (!Number.isInteger(size) || size < 1 || size > 1 << 20)
        return new Response("size must be 1..1048576", { status: 400 });
      return server.upgrade(req, { data: -size }) ? undefined : new Response("upgrade failed", { status: 400 });
    },
    "/broadcast": (req, server) =>
      server.upgrade(req, { data: BROADCAST }) ? undefined : new Response("upgrade failed", { status: 400 }),
  },
  fetch() {
    return new Response("not found", { status: 404 });
  },
  websocket: {
    maxPayloadLength: 64 * 1024 * 1024,
    idleTimeout: 0, // disabled
    sendPings: false,
    perMessageDeflate: deflate,
    // backpressureLimit / closeOnBackpressureLimit: Bun's defaults (16 MiB, no close)
    open(ws) {
      if (ws.data === BROADCAST) ws.subscribe("all");
      else if (ws.data < 0) pump(ws);
    },
    drain(ws) {
      if (ws.data < 0) pump(ws);
    },
    message(ws, message) {
      // message: a string for a text frame, a Buffer for a binary one; send/publish keep the type.
      if (ws.data === ECHO) ws.send(message, deflate);
      else server.publish("all", message, deflate);
    },
  },
});

function stop(): void {
  server.stop(true);
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
