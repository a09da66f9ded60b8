import { type ClientHttp2Session, type Http2Session, type ServerHttp2Session, connect as http2Connect, createServer } from "node:http2";
import { afterEach, describe, expect, it } from "vitest";
import { connect } from "../src/client/index.js";
import { RECEIVE_WINDOW_BYTES } from "../src/wire/receive-window.js";
import { eventually } from "./support/collect.js";
import { grpcRequest } from "./support/raw-http2.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * Every connection Weft reads batches from advertises RECEIVE_WINDOW_BYTES, for each stream
 * (SETTINGS_INITIAL_WINDOW_SIZE) and for the connection (WINDOW_UPDATE), instead of HTTP/2's
 * 64 KiB. Seen from the other end of a real socket: a raw HTTP/2 session, which reports what
 * the sidecar (or client) advertised to it.
 */

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** Resolves once the far end advertised the wide window for streams and for the connection. */
async function advertisedWide(session: Http2Session, what: string): Promise<void> {
  await eventually(
    () => session.remoteSettings.initialWindowSize === RECEIVE_WINDOW_BYTES && (session.state.remoteWindowSize ?? 0) >= RECEIVE_WINDOW_BYTES / 2,
    10_000,
    `${what}: stream window ${session.remoteSettings.initialWindowSize}, connection window ${session.state.remoteWindowSize}`,
  );
}

/** Opens a raw gRPC call to `path` on a sidecar's listener (what any gRPC client sends first). */
function rawCall(address: string, path: string): ClientHttp2Session {
  const session = http2Connect(`http://${address}`);
  session.on("error", () => {});
  grpcRequest(session, path);
  cleanup.push(() => void session.destroy());
  return session;
}

/** A raw HTTP/2 server on a loopback port, standing in for a peer or a sidecar: it keeps the sessions that connect. */
async function rawServer(): Promise<{ address: string; sessions: ServerHttp2Session[] }> {
  const sessions: ServerHttp2Session[] = [];
  const server = createServer();
  server.on("session", (s) => {
    sessions.push(s);
    s.on("error", () => {});
  });
  server.on("stream", (stream) => stream.on("error", () => {}));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanup.push(() => {
    for (const s of sessions) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { address: `127.0.0.1:${(server.address() as { port: number }).port}`, sessions };
}

describe("HTTP/2 receive windows", () => {
  let t: TestSidecar;

  it("a link the peer API accepts gets the wide window: forwards come in on it", async () => {
    t = await startSidecar({ nodeId: "acceptor" });
    cleanup.push(() => t.dispose());
    const session = rawCall(t.peerAddress, "/weft.v1.Peer/Link");
    await advertisedWide(session, "the accepted link");
  });

  it("a publish stream on the service API gets the wide window", async () => {
    t = await startSidecar({ nodeId: "service" });
    cleanup.push(() => t.dispose());
    const session = rawCall(t.address, "/weft.v1.Mesh/Publish");
    await advertisedWide(session, "the publish stream");
  });

  it("a sidecar dials its peers with the wide window: forwards come in on a link it dialed too", async () => {
    const fakePeer = await rawServer();
    t = await startSidecar({ nodeId: "dialer", peers: [fakePeer.address] });
    cleanup.push(() => t.dispose());
    await eventually(() => fakePeer.sessions.length > 0, 10_000, "the sidecar dialing its peer");
    await advertisedWide(fakePeer.sessions[0]!, "the dialed link");
  });

  it("the client connects with the wide window: deliveries come in on it", async () => {
    const fakeSidecar = await rawServer();
    const client = connect(fakeSidecar.address);
    cleanup.push(() => client.close());
    client.publish({ channel: "orders.created", data: new Uint8Array(1) }).catch(() => {});
    await eventually(() => fakeSidecar.sessions.length > 0, 10_000, "the client connecting");
    await advertisedWide(fakeSidecar.sessions[0]!, "the client's connection");
  });
});
