import { type ClientDuplexStream, type ServerDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import type { Hello } from "../gen/weft/v1/peer_pb.js";
import { failStream, writeSafe } from "../wire/status.js";
import { nodeOfCertificate } from "../security/credentials.js";
import type { WeftIdentity } from "../security/spiffe.js";
import { type IncomingFrame, TooManyEvents, readFrame, writeFrame } from "../wire/peer-frames.js";

/** The shortest silence that ends a link, ms. */
const SILENCE_FLOOR_MS = 2000;

/** Why a link ended. */
export interface LinkClosed {
  code: status;
  /** The stable reason ("weft-reason"), or the status name when the other side gave none. */
  reason: string;
  message: string;
  /** The node id the other side named in its refusal ("weft-node-id"), if any. */
  nodeId?: string | undefined;
}

/** The stream under a link: a server call (accepted) or a client call (dialed). */
export interface LinkTransport {
  send(bytes: Uint8Array): void;
  /** Ends the link; the other side sees `error` where the transport can say it (server side). */
  fail(error: WeftError): void;
  onMessage(listener: (bytes: Uint8Array) => void): void;
  /** Called once, when the link has ended for any reason. */
  onClose(listener: (why: LinkClosed) => void): void;
  /**
   * Who the other end's verified certificate names: a node, or a sentence saying why it
   * names none. Undefined on a link without TLS.
   */
  certified(): WeftIdentity | string | undefined;
}

/** What a link needs from the sidecar it belongs to. */
export interface LinkHost {
  /** This sidecar's hello. */
  hello(): Omit<Hello, "$typeName">;
  /** Checks the peer's hello and registers the link; an error refuses it. */
  admit(link: PeerLink, hello: Hello): WeftError | undefined;
  /** Both hellos are exchanged: the link carries frames from now on. */
  up(link: PeerLink): void;
  /** A frame after the handshake. @throws WeftError to end the link. */
  frame(link: PeerLink, frame: IncomingFrame): void;
  /** The link ended (after `admit` accepted it or not). */
  closed(link: PeerLink, why: LinkClosed): void;
}

/**
 * One link with a peer sidecar over a weft.v1.Peer.Link stream: the hello handshake,
 * heartbeats on a quiet link, a link silent for three of the peer's heartbeat intervals
 * ended as broken, and frames handed to the host.
 */
export class PeerLink {
  /** The peer's hello, once received. */
  peer: Hello | undefined;
  private isUp = false;
  private ended = false;
  private lastSent = Date.now();
  private lastReceived = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly transport: LinkTransport,
    /** Whether this sidecar dialed the link or accepted it. */
    readonly role: "dialer" | "acceptor",
    private readonly host: LinkHost,
    private readonly heartbeatMs: number,
    /** The address dialed, for a dialed link. */
    readonly address = "",
  ) {
    transport.onMessage((bytes) => this.receive(bytes));
    transport.onClose((why) => {
      this.ended = true;
      clearInterval(this.timer);
      this.host.closed(this, why);
    });
    this.timer = setInterval(() => this.beat(), Math.max(10, Math.floor(heartbeatMs / 2)));
    this.timer.unref();
    if (role === "dialer") this.sendHello();
  }

  get nodeId(): string {
    return this.peer?.nodeId ?? "";
  }
  /** Who the peer's verified certificate names (see LinkTransport.certified); undefined without TLS. */
  get certified(): WeftIdentity | string | undefined {
    return this.transport.certified();
  }
  get open(): boolean {
    return this.isUp && !this.ended;
  }

  send(bytes: Uint8Array): void {
    if (this.ended) return;
    this.lastSent = Date.now();
    this.transport.send(bytes);
  }

  /** Ends the link with `error`. Idempotent. */
  fail(error: WeftError): void {
    if (this.ended) return;
    this.transport.fail(error);
  }

  private sendHello(): void {
    this.send(writeFrame({ case: "hello", value: this.host.hello() as Hello }));
  }

  private receive(bytes: Uint8Array): void {
    if (this.ended) return;
    this.lastReceived = Date.now();
    try {
      let frame: IncomingFrame;
      try {
        frame = readFrame(bytes);
      } catch (e) {
        if (e instanceof TooManyEvents) throw new WeftError(status.RESOURCE_EXHAUSTED, Reason.BATCH_TOO_LARGE, e.message, "forward.events");
        throw new WeftError(status.INVALID_ARGUMENT, Reason.MALFORMED_MESSAGE, `the frame is not a valid weft.v1.PeerFrame (${(e as Error).message})`);
      }
      if (!this.peer) {
        if (frame.case !== "message" || frame.frame.case !== "hello") {
          throw new WeftError(status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION, "the first frame on a link must be hello");
        }
        this.peer = frame.frame.value;
        const refusal = this.host.admit(this, this.peer);
        if (refusal) throw refusal;
        if (this.role === "acceptor") this.sendHello();
        this.isUp = true;
        this.host.up(this);
        return;
      }
      if (frame.case === "message" && frame.frame.case === "hello") {
        throw new WeftError(status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION, "hello may be sent only once, as the first frame");
      }
      if (frame.case === "message" && frame.frame.case === undefined) {
        throw new WeftError(status.INVALID_ARGUMENT, Reason.MALFORMED_MESSAGE, "the frame sets none of its fields");
      }
      this.host.frame(this, frame);
    } catch (e) {
      this.fail(
        e instanceof WeftError ? e : new WeftError(status.INTERNAL, Reason.PROTOCOL_VIOLATION, `the frame could not be handled: ${(e as Error).message}`),
      );
    }
  }

  private beat(): void {
    const now = Date.now();
    const peerInterval = this.peer?.heartbeatIntervalMs || this.heartbeatMs;
    // Three missed heartbeats, and never less than SILENCE_FLOOR_MS: a busy event loop on
    // either side must not pass for a dead peer (a dead process closes its sockets anyway).
    if (now - this.lastReceived > Math.max(3 * Math.max(peerInterval, this.heartbeatMs), SILENCE_FLOOR_MS)) {
      this.fail(new WeftError(status.UNAVAILABLE, Reason.PEER_SILENT, `nothing heard from the peer for ${now - this.lastReceived} ms`));
      return;
    }
    if (this.isUp && now - this.lastSent >= this.heartbeatMs) {
      this.send(writeFrame({ case: "heartbeat", value: { sentUnixMs: BigInt(now) } as never }));
    }
  }
}

/** The transport of an accepted link: the server side of Peer.Link. */
export function serverTransport(call: ServerDuplexStream<Buffer, Uint8Array>, ownNodeId: string, certified?: WeftIdentity | string): LinkTransport {
  const closing = closeOnce();
  call.on("end", () => {
    closing.close({ code: status.OK, reason: "ENDED", message: "the peer ended the link" });
    call.end();
  });
  call.on("cancelled", () => closing.close({ code: status.CANCELLED, reason: "CANCELLED", message: "the peer cancelled the link" }));
  call.on("error", (e: Error) => closing.close({ code: status.UNAVAILABLE, reason: "UNAVAILABLE", message: e.message }));
  call.on("close", () => closing.close({ code: status.UNAVAILABLE, reason: "UNAVAILABLE", message: "the link's stream closed" }));
  return {
    send: (bytes) => void writeSafe(call, bytes),
    fail: (error) => {
      // The dialer learns who refused it, so it can tell a link it already has from a new one.
      failStream(call, error, { "weft-node-id": ownNodeId });
      closing.close({ code: error.code, reason: error.reason, message: error.message });
    },
    onMessage: (listener) => call.on("data", listener),
    onClose: closing.listen,
    certified: () => certified,
  };
}

/**
 * The transport of a dialed link: the client side of Peer.Link. With `trustDomain` (the
 * link is mutual TLS), the accepting sidecar is the node its certificate names.
 */
export function clientTransport(call: ClientDuplexStream<Uint8Array, Buffer>, trustDomain?: string): LinkTransport {
  const closing = closeOnce();
  call.on("error", (e: ServiceError) => {
    const reason = e.metadata?.get("weft-reason")[0];
    const nodeId = e.metadata?.get("weft-node-id")[0];
    closing.close({
      code: e.code,
      reason: reason ? String(reason) : (status[e.code] ?? "UNKNOWN"),
      message: e.details || e.message,
      nodeId: nodeId ? String(nodeId) : undefined,
    });
  });
  call.on("end", () => closing.close({ code: status.OK, reason: "ENDED", message: "the peer ended the link" }));
  return {
    send: (bytes) => {
      if (!call.writableEnded && !call.destroyed) call.write(bytes);
    },
    fail: (error) => {
      // A client cannot send a status: the peer sees CANCELLED, and the reason is logged here.
      closing.close({ code: error.code, reason: error.reason, message: error.message });
      call.cancel();
    },
    onMessage: (listener) => call.on("data", listener),
    onClose: closing.listen,
    certified: () => (trustDomain === undefined ? undefined : nodeOfCertificate(call.getAuthContext()?.sslPeerCertificate, trustDomain)),
  };
}

function closeOnce(): { close: (why: LinkClosed) => void; listen: (l: (why: LinkClosed) => void) => void } {
  let done = false;
  const listeners: ((why: LinkClosed) => void)[] = [];
  return {
    close: (why) => {
      if (done) return;
      done = true;
      // Status details start with the reason already ("REASON: what"); keep it once.
      const text = String(why.message ?? "");
      const message = text.startsWith(`${why.reason}: `) ? text.slice(why.reason.length + 2) : text;
      for (const l of listeners) l({ ...why, message });
    },
    listen: (l) => listeners.push(l),
  };
}
