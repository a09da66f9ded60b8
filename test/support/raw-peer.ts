import { randomBytes, randomUUID } from "node:crypto";
import { type MessageInitShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type ChannelCredentials,
  type Client,
  type ClientDuplexStream,
  type StatusObject,
  credentials,
  makeGenericClientConstructor,
  status,
} from "@grpc/grpc-js";
import { StartPosition_Kind } from "../../src/gen/weft/v1/mesh_pb.js";
import {
  type GroupInterest,
  type Hello,
  HelloSchema,
  type Interest,
  type Outcomes,
  Peer,
  type PeerFrame,
  PeerFrameSchema,
} from "../../src/gen/weft/v1/peer_pb.js";
import { rawServiceDefinition } from "../../src/wire/service-definitions.js";
import { type EventFields, writeEvent } from "../../src/wire/messages.js";
import { type ForwardedEvent, writeForward, writeFrame } from "../../src/wire/peer-frames.js";
import { within } from "./collect.js";

/**
 * A weft.v1.Peer client that sends and receives bytes, so tests can play a peer sidecar
 * that misbehaves (garbage, frames out of order, forwards for groups never advertised) and
 * see exactly how the sidecar ends the link. Incoming frames are decoded with `fromBinary`
 * (not the sidecar's own reader), so the tests check the bytes the way any peer would.
 */

/** How a link ended, as the raw peer saw it. */
export interface LinkStatus {
  code: status;
  details: string;
  /** The "weft-reason" trailer, "" when there is none (e.g. a transport-level refusal). */
  reason: string;
  /** The "weft-node-id" trailer (who refused), "" when there is none. */
  nodeId: string;
  /** The "weft-field" trailer, "" when there is none. */
  field: string;
}

export type Frame = PeerFrame["frame"];
export type FrameCase = NonNullable<Frame["case"]>;
/** What a frame of case `C` carries. */
export type FrameValue<C extends FrameCase> = Extract<Frame, { case: C }> extends { value: infer V } ? V : never;

const RawPeerClient = makeGenericClientConstructor(rawServiceDefinition(Peer), "Peer");

type RawCall = ClientDuplexStream<Uint8Array, Buffer>;

/** Random, never 0: a hello's `instance` or `log_id`. */
export function randomInstance(): bigint {
  const n = randomBytes(8).readBigUInt64BE(0);
  return n === 0n ? 1n : n;
}

/**
 * A well-formed hello for protocol version 1. The heartbeat interval is long, so a raw
 * peer that sends nothing for a while is not ended as silent in the middle of a test.
 */
export function hello(nodeId: string, init: Partial<Omit<Hello, "$typeName">> = {}): Hello {
  return create(HelloSchema, {
    nodeId,
    instance: randomInstance(),
    logId: randomInstance(),
    minProtocolVersion: 1,
    maxProtocolVersion: 1,
    softwareVersion: "raw-peer",
    heartbeatIntervalMs: 60_000,
    ...init,
  });
}

/** A GroupInterest with members, starting at the earliest event, with the sidecar's defaults otherwise. */
export function groupInterest(channel: string, group: string): Omit<GroupInterest, "$typeName"> {
  return {
    channel,
    group,
    start: { $typeName: "weft.v1.StartPosition", kind: StartPosition_Kind.EARLIEST, sequence: 0n, time: undefined },
    maxAttempts: 0,
    deadLetterChannel: "",
    members: true,
    createdUnixMs: BigInt(Date.now()),
  };
}

/** An encoded weft.v1.Event with the required fields set (id, source, type, channel). */
export function eventBytes(channel: string, init: Partial<EventFields> = {}): Uint8Array {
  return writeEvent({
    id: randomUUID(),
    source: "//weft-test/raw-peer",
    type: "test.raw_peer",
    subject: "",
    time: undefined,
    datacontenttype: "",
    data: Buffer.from("payload"),
    attributes: {},
    channel,
    key: "",
    ...init,
  });
}

/** One ForwardedEvent for (channel, group) at `sequence`, first attempt, with a valid event. */
export function forwarded(channel: string, group: string, sequence: number, init: Partial<ForwardedEvent> = {}): ForwardedEvent {
  return { channel, group, sequence, attempt: 1, bytes: eventBytes(channel), ...init };
}

/** One Peer.Link stream: frames queued as they arrive, the final status kept. */
export class RawLink {
  /** Resolves once the link has ended, with its status; never rejects. */
  readonly status: Promise<LinkStatus>;
  /** Every frame received so far (heartbeats included), in order. */
  readonly received: Frame[] = [];
  private readonly inbox: Frame[] = [];
  private wake: (() => void) | undefined;
  private ended: LinkStatus | undefined;

  constructor(readonly call: RawCall) {
    call.on("data", (bytes: Buffer) => {
      const frame = fromBinary(PeerFrameSchema, bytes).frame;
      this.received.push(frame);
      this.inbox.push(frame);
      this.notify();
    });
    // The status event carries the same information; this keeps "error" from throwing.
    call.on("error", () => {});
    this.status = new Promise((resolve) => {
      call.on("status", (s: StatusObject) => {
        const trailer = (key: string): string => String(s.metadata?.get(key)[0] ?? "");
        this.ended = { code: s.code, details: s.details, reason: trailer("weft-reason"), nodeId: trailer("weft-node-id"), field: trailer("weft-field") };
        this.notify();
        resolve(this.ended);
      });
    });
  }

  /** True once the link has ended. */
  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** Writes one message (any bytes). Ignored once the link has ended. */
  write(bytes: Uint8Array): void {
    if (this.ended || this.call.writableEnded || this.call.destroyed) return;
    this.call.write(bytes);
  }

  /** Sends one frame (any but a forward) through protobuf-es. */
  send(frame: MessageInitShape<typeof PeerFrameSchema>["frame"]): void {
    this.write(toBinary(PeerFrameSchema, create(PeerFrameSchema, { frame })));
  }

  sendHello(h: Hello): void {
    this.write(writeFrame({ case: "hello", value: h }));
  }

  /** Sends an interest frame: a snapshot, or a delta. */
  sendInterest(snapshot: boolean, groups: Omit<GroupInterest, "$typeName">[] = []): void {
    this.send({ case: "interest", value: { snapshot, groups } });
  }

  /** Sends a forward, encoded as the sidecar encodes it. */
  forward(forwardId: number, events: readonly ForwardedEvent[]): void {
    this.write(writeForward(forwardId, events));
  }

  /** Half-closes: no more frames from this side. */
  end(): void {
    if (!this.call.writableEnded) this.call.end();
  }

  /** Cancels the link from this side. */
  cancel(): void {
    this.call.cancel();
  }

  /**
   * The next frame from the sidecar, heartbeats skipped unless asked for. Rejects when the
   * link ends first (with its status in the message) or nothing arrives within `timeoutMs`
   * (a safety net).
   */
  async next(options: { heartbeats?: boolean; timeoutMs?: number } = {}): Promise<Frame> {
    const timeoutMs = options.timeoutMs ?? 20_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.inbox.shift();
      if (frame) {
        if (frame.case === "heartbeat" && !options.heartbeats) continue;
        return frame;
      }
      if (this.ended) {
        const s = this.ended;
        throw new Error(`the link ended with ${status[s.code]} ${s.reason} (${s.details}) before the next frame`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The next frame (heartbeats skipped), which must be of case `c`. */
  async expect<C extends FrameCase>(c: C, timeoutMs?: number): Promise<FrameValue<C>> {
    const frame = await this.next(timeoutMs === undefined ? {} : { timeoutMs });
    if (frame.case !== c) throw new Error(`expected a ${c} frame, got ${frame.case ?? "an empty frame"}`);
    return frame.value as FrameValue<C>;
  }

  /** Skips frames (heartbeats, interest deltas, ...) until one of case `c` arrives. */
  async until<C extends FrameCase>(c: C, timeoutMs?: number): Promise<FrameValue<C>> {
    for (;;) {
      const frame = await this.next(timeoutMs === undefined ? {} : { timeoutMs });
      if (frame.case === c) return frame.value as FrameValue<C>;
    }
  }

  /** Skips frames until an interest frame for which `match` holds. */
  async interest(match: (i: Interest) => boolean, timeoutMs?: number): Promise<Interest> {
    for (;;) {
      const i = await this.until("interest", timeoutMs);
      if (match(i)) return i;
    }
  }

  /**
   * Collects `outcomes` frames until `done` holds for what has been seen (sequences per
   * "channel/group"), skipping other frames.
   */
  async outcomes(done: (seen: Map<string, { done: bigint[]; returned: bigint[] }>) => boolean, timeoutMs?: number): Promise<Map<string, { done: bigint[]; returned: bigint[] }>> {
    const seen = new Map<string, { done: bigint[]; returned: bigint[] }>();
    while (!done(seen)) {
      const o: Outcomes = await this.until("outcomes", timeoutMs);
      for (const g of o.groups) {
        const key = `${g.channel}/${g.group}`;
        const s = seen.get(key) ?? { done: [], returned: [] };
        s.done.push(...g.done);
        s.returned.push(...g.returned);
        seen.set(key, s);
      }
    }
    return seen;
  }

  /** The status, once the link ends; rejects after `timeoutMs` (a safety net against hangs). */
  async finished(timeoutMs = 20_000): Promise<LinkStatus> {
    return within(this.status, timeoutMs, "the end of the link");
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/** A raw connection to a sidecar's peer API; each `link()` is a new Peer.Link stream. */
export class RawPeer {
  private readonly client: Client & Record<"Link", () => RawCall>;
  private readonly links: RawLink[] = [];

  /** `secure`: TLS credentials (a peer port with mutual TLS); plaintext without. */
  constructor(address: string, secure?: ChannelCredentials) {
    this.client = new RawPeerClient(address, secure ?? credentials.createInsecure(), {
      "grpc.max_receive_message_length": -1,
      "grpc.max_send_message_length": -1,
      // A peer's certificate names a node, not the address: skip the host name check.
      ...(secure ? { "grpc.ssl_target_name_override": "localhost" } : {}),
    }) as unknown as Client & Record<"Link", () => RawCall>;
  }

  /** Opens a link and sends nothing yet. */
  link(): RawLink {
    const l = new RawLink(this.client.Link());
    this.links.push(l);
    return l;
  }

  /**
   * Opens a link the way a well-behaved sidecar does: sends `h`, waits for the sidecar's
   * hello and its interest snapshot, and sends an empty snapshot of its own (unless
   * `snapshot` is false).
   */
  async linkUp(h: Hello, options: { snapshot?: boolean } = {}): Promise<{ link: RawLink; hello: Hello; interest: Interest }> {
    const link = this.link();
    link.sendHello(h);
    const theirs = await link.expect("hello");
    const interest = await link.expect("interest");
    if (options.snapshot !== false) link.sendInterest(true);
    return { link, hello: theirs, interest };
  }

  /** Cancels every link still open and closes the channel. */
  close(): void {
    for (const l of this.links) if (!l.closed) l.cancel();
    this.client.close();
  }
}
