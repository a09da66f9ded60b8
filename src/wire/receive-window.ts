import type { Http2Session } from "node:http2";

/**
 * The HTTP/2 receive window of Weft's connections, for the connection and for each stream:
 * the service API's (publish batches in), the client's (delivery batches in), and both ends
 * of a peer link (forwards one way, outcomes the other).
 *
 * With Node's default of 64 KiB, a message of 500 events (~180 KB) crosses in 64 KiB steps,
 * each waiting for the receiver's event loop to send a WINDOW_UPDATE and the sender's to act
 * on it: the stream then runs at the pace of the two loops' latency, not their CPU. On a
 * peer link that pace is the origin's, whose loop is busiest when its publishers are: the
 * forwards would slow down just when there is most to forward.
 *
 * Both windows matter: a wider stream window alone still waits on the connection's 64 KiB.
 * The windows do not bound memory: grpc-js reads a stream's bytes as they come, and keeps
 * a message's bytes until it is whole. Whole messages not consumed stop grpc-js reading the
 * stream; messages received in part are bounded by ReceiveBudget.
 */
export const RECEIVE_WINDOW_BYTES = 16 * 1024 * 1024;

/** The grpc-js channel option that gives a dialed connection RECEIVE_WINDOW_BYTES. */
export const WIDE_RECEIVE_WINDOW = { "grpc-node.flow_control_window": RECEIVE_WINDOW_BYTES } as const;

const widened = new WeakSet<Http2Session>();

/**
 * Widens the receive window of a server call's connection to RECEIVE_WINDOW_BYTES, once per
 * connection. grpc-js has no server option for it (grpc/grpc-node#3058), so this reaches the
 * HTTP/2 session through grpc-js internals and does nothing when they are not there.
 */
export function widenReceiveWindow(call: object): void {
  const inner = (call as { call?: { stream?: { session?: Http2Session } } }).call;
  const session = inner?.stream?.session;
  if (!session || widened.has(session) || session.destroyed || typeof session.setLocalWindowSize !== "function") return;
  widened.add(session);
  try {
    session.setLocalWindowSize(RECEIVE_WINDOW_BYTES);
    session.settings({ initialWindowSize: RECEIVE_WINDOW_BYTES });
  } catch {
    // A session closing meanwhile: nothing to widen.
  }
}
