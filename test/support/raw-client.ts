import { type MessageInitShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  type Client,
  type ClientDuplexStream,
  type StatusObject,
  credentials,
  makeGenericClientConstructor,
  status,
} from "@grpc/grpc-js";
import { type Event, EventSchema } from "../../src/gen/weft/v1/event_pb.js";
import {
  type Delivery,
  Mesh,
  type PublishResponse,
  PublishResponseSchema,
  type Subscribed,
  SubscribeRequestSchema,
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "../../src/gen/weft/v1/mesh_pb.js";
import { rawServiceDefinition } from "../../src/wire/service-definitions.js";
import { within } from "./collect.js";

/**
 * A weft.v1.Mesh client that sends and receives bytes, so tests can send what the typed
 * client never would (garbage, truncated messages, requests out of order) and see exactly
 * what the sidecar answers.
 */

/** How a stream ended, as the client saw it. */
export interface StreamStatus {
  code: status;
  details: string;
  /** The "weft-reason" trailer, "" when there is none (e.g. a transport-level refusal). */
  reason: string;
  /** The "weft-field" trailer, "" when there is none. */
  field: string;
}

// The raw definition passes Buffers through both ways: on the client side too.
const RawMeshClient = makeGenericClientConstructor(rawServiceDefinition(Mesh), "Mesh");

type RawCall = ClientDuplexStream<Uint8Array, Buffer>;

/** One bidi stream of raw messages, with its incoming messages queued and its status kept. */
export class RawStream {
  /** Resolves once the stream has ended, with its status; never rejects. */
  readonly status: Promise<StreamStatus>;
  private readonly inbox: Buffer[] = [];
  private wake: (() => void) | undefined;
  private ended: StreamStatus | undefined;

  constructor(readonly call: RawCall) {
    call.on("data", (bytes: Buffer) => {
      this.inbox.push(bytes);
      this.notify();
    });
    // The status event carries the same information; this keeps "error" from throwing.
    call.on("error", () => {});
    this.status = new Promise((resolve) => {
      call.on("status", (s: StatusObject) => {
        this.ended = {
          code: s.code,
          details: s.details,
          reason: String(s.metadata?.get("weft-reason")[0] ?? ""),
          field: String(s.metadata?.get("weft-field")[0] ?? ""),
        };
        this.notify();
        resolve(this.ended);
      });
    });
  }

  /** Writes one message (any bytes). Ignored once the stream has ended. */
  write(bytes: Uint8Array): void {
    if (this.ended || this.call.writableEnded) return;
    this.call.write(bytes);
  }

  /** Half-closes: no more requests. */
  end(): void {
    if (!this.call.writableEnded) this.call.end();
  }

  /** Cancels the call from the client side. */
  cancel(): void {
    this.call.cancel();
  }

  /**
   * The next message from the sidecar. Rejects when the stream ends first (with its
   * status in the message) or nothing arrives within `timeoutMs` (a safety net).
   */
  async next(timeoutMs = 20_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const message = this.inbox.shift();
      if (message) return message;
      if (this.ended) {
        const s = this.ended;
        throw new Error(`the stream ended with ${status[s.code]} ${s.reason} (${s.details}) before the next message`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The status, once the stream ends; rejects after `timeoutMs` (a safety net against hangs). */
  async finished(timeoutMs = 20_000): Promise<StreamStatus> {
    return within(this.status, timeoutMs, "the end of the stream");
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/** A Publish stream that speaks PublishRequest/PublishResponse, or raw bytes. */
export class RawPublish extends RawStream {
  /** Sends one batch: events as messages, or as raw bytes for entries that are not valid events. */
  send(batchId: bigint | number, events: readonly (Event | Uint8Array)[]): void {
    this.write(encodePublishRequest(batchId, events));
  }

  /** The next PublishResponse. */
  async response(timeoutMs?: number): Promise<PublishResponse> {
    return fromBinary(PublishResponseSchema, await this.next(timeoutMs));
  }

  /** Sends one batch and waits for its answer. */
  async publish(batchId: bigint | number, events: readonly (Event | Uint8Array)[]): Promise<PublishResponse> {
    this.send(batchId, events);
    return this.response();
  }
}

export type SubscribeRequestInit = MessageInitShape<typeof SubscribeRequestSchema>["request"];
export type SubscribeOpenInit = Extract<NonNullable<SubscribeRequestInit>, { case: "open" }>["value"];

/** A Subscribe stream that speaks SubscribeRequest/SubscribeResponse, or raw bytes. */
export class RawSubscribe extends RawStream {
  private readonly buffered: Delivery[] = [];
  private confirmation: Subscribed | undefined;

  /** Sends one SubscribeRequest. */
  request(request: SubscribeRequestInit): void {
    this.write(encodeSubscribeRequest(request));
  }

  open(open: SubscribeOpenInit): void {
    this.request({ case: "open", value: open });
  }

  ack(...deliveryIds: (bigint | number)[]): void {
    this.request({ case: "ack", value: { deliveryIds: deliveryIds.map(BigInt) } });
  }

  nack(deliveryIds: (bigint | number)[], delayMs = 0): void {
    this.request({ case: "nack", value: { deliveryIds: deliveryIds.map(BigInt), delayMs } });
  }

  credit(credits: number): void {
    this.request({ case: "credit", value: { credits } });
  }

  /** Waits for the `subscribed` confirmation. */
  async subscribed(timeoutMs?: number): Promise<Subscribed> {
    while (!this.confirmation) await this.read(timeoutMs);
    return this.confirmation;
  }

  /** Waits for `n` more deliveries (in the order the sidecar sent them). */
  async take(n: number, timeoutMs?: number): Promise<Delivery[]> {
    while (this.buffered.length < n) await this.read(timeoutMs);
    return this.buffered.splice(0, n);
  }

  /** Deliveries received and not yet taken. */
  get pending(): readonly Delivery[] {
    return this.buffered;
  }

  private async read(timeoutMs?: number): Promise<void> {
    const response: SubscribeResponse = fromBinary(SubscribeResponseSchema, await this.next(timeoutMs));
    const r = response.response;
    if (r.case === "subscribed") this.confirmation = r.value;
    else if (r.case === "deliveries") this.buffered.push(...r.value.deliveries);
  }
}

/** A raw connection to a sidecar's service API. */
export class RawMeshConnection {
  private readonly client: Client & Record<"Publish" | "Subscribe", () => RawCall>;

  constructor(address: string) {
    const target = address.startsWith("/") ? `unix:${address}` : address;
    this.client = new RawMeshClient(target, credentials.createInsecure(), {
      "grpc.max_receive_message_length": -1,
      "grpc.max_send_message_length": -1,
    }) as unknown as Client & Record<"Publish" | "Subscribe", () => RawCall>;
  }

  publish(): RawPublish {
    return new RawPublish(this.client.Publish());
  }

  subscribe(): RawSubscribe {
    return new RawSubscribe(this.client.Subscribe());
  }

  close(): void {
    this.client.close();
  }
}

/**
 * Encodes a weft.v1.PublishRequest by hand, so that an entry of `events` can be any bytes.
 * Field numbers follow proto/weft/v1/mesh.proto.
 */
export function encodePublishRequest(batchId: bigint | number, events: readonly (Event | Uint8Array)[]): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.Varint).uint64(BigInt(batchId));
  for (const e of events) {
    w.tag(2, WireType.LengthDelimited).bytes(e instanceof Uint8Array ? e : toBinary(EventSchema, e));
  }
  return w.finish();
}

export function encodeSubscribeRequest(request: SubscribeRequestInit): Uint8Array {
  return toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { request }));
}
